"""A short title <-> SID fine-tune for items added after SFT (minionerec/rq/add_items.py --align_steps N).

It is SFT's item-alignment task (minionerec.data.sft_tasks: title -> SID and SID -> title) restricted to
the new items, tokenised, collated and trained exactly as sft.py does (same dataset builder,
`AnswerWindowCollator`, HF `Trainer`), for a few steps and without checkpoints.
"""
from __future__ import annotations

import tempfile

import torch
from transformers import Trainer, TrainingArguments

from minionerec.data.sft_tasks import AnswerWindowCollator
from minionerec.data.sft_tasks import build_text_dataset, tokenize_dataset


def align_new_items(model, tokenizer, new_index: dict[str, list[str]], item_meta: dict[str, dict], steps: int,
                    learning_rate: float = 1e-4, batch_size: int = 8, seed: int = 0, cutoff_len: int = 512) -> float:
    """Train `model` in place on the new items' alignment pairs for `steps` steps; returns the mean train loss."""
    missing = [i for i in new_index if i not in item_meta]
    if missing:
        raise ValueError(f"item {missing[0]} has no title in item.json; alignment needs every new item's title")
    dataset = tokenize_dataset(build_text_dataset(["item_alignment"], None, new_index, item_meta, seed), tokenizer,
                               cutoff_len)
    with tempfile.TemporaryDirectory(prefix="align-") as scratch:  # Trainer wants an output_dir; nothing is kept
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=learning_rate,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, save_strategy="no", report_to=[],
            logging_steps=max(steps, 1), seed=seed, dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=AnswerWindowCollator(tokenizer.pad_token_id), processing_class=tokenizer)
        result = trainer.train()
    model.eval()
    return result.training_loss
