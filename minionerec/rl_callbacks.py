"""In-training evaluation for RL: constrained beam search on the eval set, HR@K / NDCG@K logged.

TRL's own evaluation computes the GRPO loss on eval prompts; what we want to watch is ranking
quality, measured exactly as evaluate.py does it (constrained beams over the closed item set).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from minionerec.constrained import constrained_beam_search
from minionerec.metrics import compute_metrics, ks_for

def metric_sums(ranked: list[list[str]], targets: list[str], ks) -> dict[str, float]:
    """Sums (not means) of HR@K / NDCG@K over the rows, so processes can add theirs up."""
    if not targets:  # a process may get no rows when the eval sample is smaller than the world
        return {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "NDCG")}
    means = compute_metrics(ranked, targets, ks)
    return {f"{m}@{k}": means[f"{m}@{k}"] * len(targets) for k in ks for m in ("HR", "NDCG")}


class ConstrainedEvalCallback(TrainerCallback):
    """Every `eval_step` steps (< 1: that fraction of all steps), rank `sample` eval rows with
    `num_beams` constrained beams and log eval_HR@K / eval_NDCG@K with the training metrics.

    Rows are split over processes (row i on process i % world) and the hit sums all-reduced; every
    process makes the same number of generate calls (ZeRO-3 needs it). Set
    `trainer` after building the trainer: its model, tokenizer and SID trie are used.
    """

    def __init__(self, eval_dataset, num_beams: int, eval_step: float, batch_size: int, sample: int = -1,
                 seed: int = 0):
        rows = list(range(len(eval_dataset)))
        if 0 <= sample < len(rows):
            rows = sorted(random.Random(seed).sample(rows, sample))
        self.prompts = [eval_dataset[i]["prompt"] for i in rows]
        self.targets = [eval_dataset[i]["target"] for i in rows]
        self.num_beams, self.eval_step, self.batch_size = num_beams, eval_step, batch_size
        self.ks = ks_for(num_beams)  # K in 1, 3, 5, 10, 20, 50 up to the list length
        self.trainer = None
        self.interval = None
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        step = self.eval_step
        self.interval = max(1, math.ceil(step * state.max_steps) if step < 1 else int(step))

    def evaluate(self) -> dict[str, float]:
        trainer = self.trainer
        rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
        prompts, targets = self.prompts[rank::world], self.targets[rank::world]
        # Under ZeRO-3 generation is collective (synced_gpus): every rank must make the same number of
        # generate calls, so ranks with fewer rows run dummy batches (one prompt, output dropped) until
        # they have made as many calls as rank 0, which has the most rows.
        n_calls = math.ceil(math.ceil(len(self.prompts) / world) / self.batch_size)
        was_training = trainer.model.training
        ranked = []
        with (
            unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                        gather_deepspeed3_params=trainer.args.ds3_gather_for_generation) as model,
            trainer.accelerator.autocast(),
        ):
            model.eval()
            for start in range(0, n_calls * self.batch_size, self.batch_size):
                batch = prompts[start:start + self.batch_size]
                out = constrained_beam_search(model, trainer.processing_class, batch or self.prompts[:1],
                                              trainer.trie, self.num_beams, batch_size=self.batch_size)
                ranked += out if batch else []
            model.train(was_training)
        sums = metric_sums(ranked, targets, self.ks)
        names = sorted(sums)
        local = torch.tensor([sums[n] for n in names] + [len(targets)], dtype=torch.float64,
                             device=trainer.accelerator.device)
        total = trainer.accelerator.reduce(local, reduction="sum")  # [n_metrics + 1]
        n = max(total[-1].item(), 1.0)
        return {f"eval_{name}": total[i].item() / n for i, name in enumerate(names)}

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer is None or state.global_step % self.interval:
            return
        metrics = self.evaluate()
        self.history.append({"step": state.global_step, **metrics})
        for name, value in metrics.items():  # logged with this step's training metrics
            self.trainer._metrics["train"][name].append(value)
        if state.is_world_process_zero:
            with open(Path(args.output_dir, "eval_during_training.jsonl"), "a") as f:
                f.write(json.dumps(self.history[-1]) + "\n")
