"""Stage 2 — supervised fine-tuning: teach a causal LM to predict the next item's SID.

    python sft.py --base_model DIR --train_file train.csv --eval_file valid.csv \
        --sid_index_path X.index.json --item_meta_path X.item.json --output_dir out/sft
    torchrun --nproc_per_node 8 sft.py ...      (see sft.sh)

Writes `output_dir/final_checkpoint` (model + tokenizer), loadable with AutoModelForCausalLM.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from minionerec.cli import resume_flag, run
from minionerec.collate import AnswerWindowCollator
from minionerec.distributed import teardown_distributed
from minionerec.data import load_item_meta, load_sid_index, load_split, sid_vocabulary
from minionerec.modeling import (add_sid_tokens, best_dtype, freeze_all_but_new_rows, load_model, load_tokenizer,
                                 save_final_checkpoint)
from minionerec.prompts import Prompts, check_style, run_category
from minionerec.sft_data import TASKS, build_text_dataset, sample_rows, tokenize_dataset


@dataclass
class Args:
    """Supervised fine-tuning of a causal LM on SID next-item prediction and alignment tasks."""

    base_model: str = ""  # local model directory (a Qwen2 checkpoint, or minionerec.tiny_model output)
    train_file: str = ""  # train CSV in the MiniOneRec format
    eval_file: str = ""  # valid CSV; empty disables evaluation
    output_dir: str = "output/sft"
    sid_index_path: str = ""  # index.json; its tokens are added to the vocabulary
    item_meta_path: str = ""  # item.json; titles for the alignment and title tasks
    category: str = ""  # dataset name: run names and upstream prompts (d), (e); "" = --sid_index_path's file name
    sample: int = -1  # use this many training rows (seeded); -1 = all
    seed: int = 42
    # batch: batch_size is global; accumulation = batch_size / (micro_batch_size * world size)
    batch_size: int = 128
    micro_batch_size: int = 4
    num_epochs: int = 10
    max_steps: int = -1  # > 0 overrides num_epochs (smoke tests, small budgets)
    learning_rate: float = 3e-4
    warmup_steps: float = 0.03  # < 1: a fraction of all steps; >= 1: a step count
    cutoff_len: int = 512  # longer sequences keep their end (the answer)
    group_by_length: bool = False
    # tasks (upstream sft.py at 81b4ba9 trains all five; later upstream commits dropped d and e)
    task_sid_history: bool = True  # (a) SID history -> next SID
    task_item_alignment: bool = True  # (b) title -> SID and SID -> title
    task_sid_history_title: bool = True  # (c) SID history -> next title
    task_title_history_title: bool = True  # (d) title history -> next title
    task_title_history_sid: bool = True  # (e) title history -> next SID
    # model
    freeze_LLM: bool = False  # train only the new SID embedding rows
    train_from_scratch: bool = False  # base_model's architecture, random weights
    deepspeed: str = ""  # optional DeepSpeed JSON/YAML config passed to TrainingArguments
    # evaluation, checkpoints, logging
    eval_steps: int = 200
    save_steps: int = 200
    save_total_limit: int = 2
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    logging_steps: int = 10
    resume_from_checkpoint: str = ""  # a checkpoint dir, or "true" for the latest in output_dir
    report_to: str = "none"  # none | wandb | tensorboard (wandb works offline with WANDB_MODE=offline)
    wandb_project: str = ""
    wandb_run_name: str = ""
    # --- prompt protocol
    prompt_style: str = "upstream"  # upstream (AkaliKong/MiniOneRec's texts, byte for byte) | minionerec (README)


def gradient_accumulation(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    per_step = micro_batch_size * world_size
    if batch_size % per_step:
        raise SystemExit(f"error: --batch_size {batch_size} is not divisible by --micro_batch_size "
                         f"{micro_batch_size} x {world_size} processes")
    return batch_size // per_step


def deepspeed_config(path: str):
    """TrainingArguments takes a JSON path or a dict; a YAML file is read into a dict here."""
    if not path:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"error: --deepspeed file not found: {path}")
    if Path(path).suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(Path(path).read_text())
    return path


def check_paths(args: Args, tasks: list[str]) -> None:
    """Fail before loading anything heavy."""
    if not args.base_model or not Path(args.base_model).is_dir():
        raise SystemExit(f"error: --base_model must be a local model directory, got {args.base_model!r}")
    if not args.train_file:
        raise SystemExit("error: --train_file is required")
    if not tasks:
        raise SystemExit("error: every --task_* switch is off; enable at least one task")
    if not args.sid_index_path:
        raise SystemExit("error: --sid_index_path is required (its SID tokens are added to the model)")
    if "item_alignment" in tasks and not args.item_meta_path:
        raise SystemExit("error: --task_item_alignment needs --item_meta_path")
    try:
        check_style(args.prompt_style)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def main(args: Args) -> Trainer:
    tasks = [t for t in TASKS if getattr(args, f"task_{t}")]
    check_paths(args, tasks)
    ds_config = deepspeed_config(args.deepspeed)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    grad_accum = gradient_accumulation(args.batch_size, args.micro_batch_size, world_size)
    set_seed(args.seed)

    # data: validated up front so a bad row fails before the model loads
    sid_index = load_sid_index(args.sid_index_path)
    item_meta = load_item_meta(args.item_meta_path) if args.item_meta_path else None
    train_df = sample_rows(load_split(args.train_file, sid_index, item_meta), args.sample, args.seed)
    eval_df = load_split(args.eval_file, sid_index, item_meta) if args.eval_file else None

    # tokenizer + model (+ SID tokens when the base model lacks them)
    tokenizer = load_tokenizer(args.base_model)
    model = load_model(args.base_model, dtype=torch.float32, from_scratch=args.train_from_scratch)
    old_vocab = model.get_input_embeddings().weight.shape[0]
    added = add_sid_tokens(model, tokenizer, sid_vocabulary(sid_index))
    if args.freeze_LLM:
        freeze_all_but_new_rows(model, first_new_row=len(tokenizer) - added if added else old_vocab)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"[sft] tasks={tasks} prompt_style={args.prompt_style} added_sid_tokens={added} "
          f"trainable_params={trainable:,} grad_accum={grad_accum} world_size={world_size}")

    prompts = Prompts(args.prompt_style, run_category(args.category, args.sid_index_path))
    train_ds = tokenize_dataset(build_text_dataset(tasks, train_df, sid_index, item_meta, args.seed, prompts),
                                tokenizer, args.cutoff_len)
    eval_ds = (tokenize_dataset(build_text_dataset(["sid_history"], eval_df, prompts=prompts), tokenizer,
                                args.cutoff_len)
               if eval_df is not None else None)

    if args.report_to == "wandb" and args.wandb_project:
        os.environ.setdefault("WANDB_PROJECT", args.wandb_project)
    use_bf16 = best_dtype() == torch.bfloat16
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.micro_batch_size,
        per_device_eval_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=args.num_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type="cosine",
        weight_decay=0.0,  # freeze_LLM relies on it: zero grads must mean zero updates
        bf16=use_bf16,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=args.early_stopping_patience > 0 and eval_ds is not None,
        metric_for_best_model="eval_loss",
        logging_steps=args.logging_steps,
        report_to=[] if args.report_to == "none" else [args.report_to],
        run_name=args.wandb_run_name or f"sft-{args.category or 'minionerec'}",
        deepspeed=ds_config,
        ddp_find_unused_parameters=False,
        seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    callbacks = ([EarlyStoppingCallback(args.early_stopping_patience)]
                 if args.early_stopping_patience > 0 and eval_ds is not None else [])
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        # left padding + logits at the answer window only: same loss as full logits (tests/test_collate.py)
        data_collator=AnswerWindowCollator(tokenizer.pad_token_id),
        processing_class=tokenizer, callbacks=callbacks,
    )
    resume = resume_flag(args.resume_from_checkpoint)
    result = trainer.train(resume_from_checkpoint=resume)

    eval_loss = trainer.evaluate()["eval_loss"] if eval_ds is not None else math.nan  # collective: all ranks
    final_dir = save_final_checkpoint(trainer, tokenizer, args.output_dir)
    if trainer.is_world_process_zero():
        first_loss = next((h["loss"] for h in trainer.state.log_history if "loss" in h), math.nan)
        eval_part = f" eval_loss={eval_loss:.4f}" if eval_ds is not None else ""
        print(f"[sft] done: steps={trainer.state.global_step} first_train_loss={first_loss:.4f} "
              f"mean_train_loss={result.training_loss:.4f}{eval_part} -> {final_dir}")
    teardown_distributed()  # explicit, after outputs are written: avoids rare exit-time aborts
    return trainer


if __name__ == "__main__":
    run(main, Args)
