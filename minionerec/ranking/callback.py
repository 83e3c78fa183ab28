"""In-training ranking evaluation for SFT and RL: constrained beam search on valid rows, HR@K / NDCG@K.

The Trainer's own evaluation computes a loss (SFT) or the GRPO objective (TRL) on eval prompts; what
we want to watch is ranking quality, measured exactly as evaluate.py does it (constrained beams over
the closed item set). The same callback draws the SFT curve (sft.py) and guards RL (rl.py --keep_best).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl.models import unwrap_model_for_generation

from minionerec.model.loading import one_input_grads_hook
from minionerec.model.saving import BEST_STEP, save_final_checkpoint
from minionerec.ranking.constrained import constrained_beam_search
from minionerec.ranking.metrics import compute_metrics, ks_for
from minionerec.run.atomic import atomic_write_text


def metric_sums(ranked: list[list[str]], targets: list[str], ks) -> dict[str, float]:
    """Sums (not means) of HR@K / NDCG@K over the rows, so processes can add theirs up."""
    if not targets:  # a process may get no rows when the eval sample is smaller than the world
        return {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "NDCG")}
    means = compute_metrics(ranked, targets, ks)
    return {f"{m}@{k}": means[f"{m}@{k}"] * len(targets) for k in ks for m in ("HR", "NDCG")}


def generation_model(trainer):
    """Context manager: the trainer's model unwrapped for `generate` (ZeRO-3: parameters gathered unless the
    GRPOConfig says not; SFT always gathers). On exit activation checkpointing comes back with the trainer's own
    kwargs: without them TRL re-enables it with transformers' default (non-reentrant), which TRL documents as
    training LoRA under ZeRO-3 incorrectly (its GRPOTrainer forces use_reentrant=True there)."""
    return unwrap_model_for_generation(
        trainer.model_wrapped, trainer.accelerator,
        gather_deepspeed3_params=getattr(trainer.args, "ds3_gather_for_generation", True),
        gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)


class ConstrainedEvalCallback(TrainerCallback):
    """Every `every` steps (< 1: that fraction of all steps), rank `sample` eval rows with
    `num_beams` constrained beams and log eval_HR@K / eval_NDCG@K with the training metrics.

    Rows are split over processes (row i on process i % world) and the hit sums all-reduced; every
    process makes the same number of generate calls (ZeRO-3 needs it). Set `trainer` after building
    the trainer: its model and tokenizer are used, with `trie` (default: the GRPO trainer's own).

    keep_best: save the weights to output_dir/best_checkpoint whenever `best_metric` beats every earlier
    evaluation; with score_start (the RL regression guard) the starting (SFT) weights are scored
    before the first step and count as step 0. The metrics are all-reduced, so every process takes the
    same decision and joins the same (collective) save. sft.py / rl.py then write the best as
    final_checkpoint (minionerec.model.saving.finish_training): early stopping on the ranking metric for SFT, as
    SASRec early-stops on valid, and "never worse than SFT" for RL.
    """

    def __init__(self, prompts: list[str], targets: list[str], num_beams: int, every: float, batch_size: int,
                 sample: int = -1, seed: int = 0, keep_best: bool = False, score_start: bool = False, tokenizer=None,
                 trie=None):
        rows = list(range(len(prompts)))
        if 0 <= sample < len(rows):
            rows = sorted(random.Random(seed).sample(rows, sample))
        self.prompts = [prompts[i] for i in rows]
        self.targets = [targets[i] for i in rows]
        self.num_beams, self.every, self.batch_size, self.trie = num_beams, every, batch_size, trie
        self.ks = ks_for(num_beams)  # K in 1, 3, 5, 10, 20, 50 up to the list length
        self.trainer = None
        self.interval = None
        self.history: list[dict] = []
        self.keep_best, self.score_start, self.tokenizer = keep_best, score_start, tokenizer
        self.best_metric = f"eval_NDCG@{max(k for k in self.ks if k <= 10)}"  # NDCG@10, or the longest list's
        self.best: dict | None = None  # the history entry of the best weights so far

    def on_train_begin(self, args, state, control, **kwargs):
        step = self.every
        self.interval = max(1, math.ceil(step * state.max_steps) if step < 1 else int(step))
        if state.global_step > 0:  # resumed: the curve and the best so far, as the uninterrupted run has them
            self.restore(Path(args.output_dir), state.global_step)
        elif self.score_start and self.trainer is not None:
            self.record(args, state.global_step, self.evaluate())  # step 0: the starting (SFT) model itself

    def restore(self, output_dir: Path, step: int) -> None:
        """Reload the evaluations up to `step` from eval_during_training.jsonl (later ones belong to the interrupted
        run's lost steps), and the best among them when best_checkpoint holds its weights (its BEST_STEP file)."""
        curve = output_dir / "eval_during_training.jsonl"
        lines = curve.read_text().splitlines() if curve.is_file() else []
        self.history = [e for e in map(json.loads, lines) if e["step"] <= step]
        if self.trainer is not None and self.trainer.is_world_process_zero():
            write_curve(curve, self.history)
        if not self.keep_best or not self.history:
            return
        best = self.history[0]
        for entry in self.history:  # the first of equals, as record() keeps it
            best = entry if entry[self.best_metric] > best[self.best_metric] else best
        marker = output_dir / "best_checkpoint" / BEST_STEP
        on_disk = int(marker.read_text()) if marker.is_file() else None
        if best["step"] == 0 or on_disk == best["step"]:
            self.best = best
        else:  # the interrupted run saved a later best over it: choose among the evaluations from here on
            print(f"warning: best_checkpoint holds step {on_disk}, not step {best['step']}, the best evaluation up to "
                  f"the resumed step {step}; keep_best chooses among the evaluations after it", flush=True)

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
        trie = self.trie if self.trie is not None else trainer.trie
        with (
            generation_model(trainer) as model,
            trainer.accelerator.autocast(),
        ):
            model.eval()
            for start in range(0, n_calls * self.batch_size, self.batch_size):
                batch = prompts[start:start + self.batch_size]
                out = constrained_beam_search(model, trainer.processing_class, batch or self.prompts[:1],
                                              trie, self.num_beams, batch_size=self.batch_size)
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
        if hasattr(self.trainer, "_metrics"):  # GRPO: logged with this step's training metrics
            for name, value in metrics.items():
                self.trainer._metrics["train"][name].append(value)
        else:  # a plain Trainer: its own log line, into trainer_state.json's log_history
            self.trainer.log(metrics)
        self.record(args, state.global_step, metrics)

    def record(self, args, step: int, metrics: dict[str, float]) -> None:
        """Append to the curve (eval_during_training.jsonl); with keep_best, save weights that beat the best."""
        self.history.append({"step": step, **metrics})
        if self.keep_best and (self.best is None or metrics[self.best_metric] > self.best[self.best_metric]):
            self.best = self.history[-1]
            if step > 0:  # step 0's weights are the starting checkpoint itself: nothing to save
                side, self.tokenizer.padding_side = self.tokenizer.padding_side, "right"  # as final_checkpoint's
                save_final_checkpoint(self.trainer, self.tokenizer, args.output_dir, name="best_checkpoint")
                self.tokenizer.padding_side = side
                if self.trainer.is_world_process_zero():  # which evaluation these weights are (restore reads it)
                    atomic_write_text(Path(args.output_dir, "best_checkpoint", BEST_STEP), str(step))
        if self.trainer.is_world_process_zero():  # rewritten whole, not appended: a full disk keeps the old curve
            write_curve(Path(args.output_dir, "eval_during_training.jsonl"), self.history)


def write_curve(path: Path, history: list[dict]) -> None:
    """eval_during_training.jsonl: one evaluation a line (a few hundred at most), written atomically."""
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in history))


def ranking_callback(args, prompts: list[str], targets: list[str], tokenizer, trie=None,
                     score_start: bool = False) -> ConstrainedEvalCallback:
    """The in-training ranking evaluation of sft.py / rl.py from their shared flags (minionerec.run.args.
    RankingEvalArgs) over the valid rows' `prompts` and target SIDs. Add it to the trainer's callbacks, then call
    `attach` once the trainer is built."""
    return ConstrainedEvalCallback(prompts, targets, num_beams=args.rank_eval_beams, every=args.rank_eval_every,
                                   batch_size=args.eval_batch_size, sample=args.eval_sample, seed=args.seed,
                                   keep_best=args.keep_best, score_start=score_start, tokenizer=tokenizer, trie=trie)


def attach(trainer, ranking: ConstrainedEvalCallback | None) -> None:
    """Once the trainer is built: its model keeps one input-grads hook however often checkpointing is toggled (TRL
    around every rollout and scoring pass, the ranking evaluation around each of its calls), and the ranking
    evaluation, if any, generates with the trainer's (wrapped) model."""
    one_input_grads_hook(trainer.model)
    if ranking is not None:
        ranking.trainer = trainer
