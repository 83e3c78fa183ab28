"""Resume from the newest COMPLETE checkpoint, and summary figures that cover the whole run.

A kill during `Trainer._save_checkpoint` leaves `checkpoint-N/` half written (empty, or weights
without optimizer / trainer state). Transformers' `resume_from_checkpoint=True` picks the highest N
regardless and crashes after the model has loaded. Here a checkpoint counts only when it is
complete, judged by the file the Trainer writes LAST: `_save_checkpoint` saves the weights, then the
optimizer, scheduler and RNG states, and only then `trainer_state.json` (transformers 5.x; pinned, and
tests/test_resume.py kills inside the save to check it). So a checkpoint is complete when its
trainer_state.json parses and names step N, and its weights are there.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from pathlib import Path

from transformers import TrainerCallback

from minionerec.run.atomic import DiskFullError, disk_full_message, no_room_reason

TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """--resume_from_checkpoint names nothing that can be resumed."""


def checkpoint_step(path) -> int | None:
    match = _CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def incomplete_reason(path) -> str | None:
    """None when `path` is a complete Trainer checkpoint, else why it is not (one phrase)."""
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE} (the save was interrupted)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{TRAINER_STATE} is truncated (the save was interrupted)"
    step = checkpoint_step(path)
    if step is not None and state.get("global_step") != step:
        return f"{TRAINER_STATE} is for step {state.get('global_step')}"
    has_deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in path.iterdir())
    if not has_deepspeed and not any((path / name).is_file() for name in WEIGHT_FILES):
        return "no model weights"
    return None


def newest_complete(output_dir) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint-N of output_dir or None, [(newer partial one, reason)])."""
    output_dir = Path(output_dir)
    found = sorted(((checkpoint_step(p), p) for p in output_dir.glob("checkpoint-*")
                    if checkpoint_step(p) is not None), reverse=True) if output_dir.is_dir() else []
    skipped = []
    for _, path in found:
        reason = incomplete_reason(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def resolve_resume(value, output_dir) -> str | None:
    """--resume_from_checkpoint ("" | "true" | a path) -> the checkpoint path for Trainer.train, or None.

    Runs before the model loads: a missing or partial checkpoint is a one-line CheckpointError; "true" skips
    partial checkpoints (newest first) with a warning on stderr, and starts fresh, warned, when none is complete.
    """
    if value is None or value is False or str(value).strip().lower() in ("", "false"):
        return None
    if value is True or str(value).strip().lower() == "true":
        path, skipped = newest_complete(output_dir)
        for partial, reason in skipped:
            print(f"warning: skipping incomplete checkpoint {partial}: {reason}", file=sys.stderr)
        if path is None:  # a restart loop's first start, or every checkpoint was cut short: train from step 0
            print(f"warning: --resume_from_checkpoint true: no complete checkpoint-N in {output_dir}; starting fresh",
                  file=sys.stderr)
            return None
        return str(path)
    reason = incomplete_reason(value)
    if reason is not None:
        if not Path(value).exists():
            reason = "no such directory"
        raise CheckpointError(f"--resume_from_checkpoint {value}: {reason}")
    return str(value)


def check_resume_within(first_step: int, max_steps: int) -> None:
    """Resuming at or past --max_steps would train nothing, or train past it, and call it finished."""
    if max_steps > 0 and first_step >= max_steps:
        raise CheckpointError(f"--resume_from_checkpoint: the checkpoint is at step {first_step}, at or past "
                              f"--max_steps {max_steps}: raise --max_steps to train on, or start a new output_dir")


# the architecture a checkpoint's weights need (the vocabulary may grow: SFT adds the SID tokens)
SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size")


def check_resume_matches(checkpoint, model_dir, model_flag: str, script: str) -> None:
    """Before the model loads: the checkpoint was written by this script (an RL run logs rewards, SFT does not;
    the other's optimizer state would be resumed silently) for a model of this shape (else the load fails
    after minutes, or mid-way under ZeRO)."""
    if checkpoint is None:
        return
    history = json.loads(Path(checkpoint, TRAINER_STATE).read_text(encoding="utf-8")).get("log_history", [])
    rewards = any("reward" in entry for entry in history)
    losses = any("loss" in entry for entry in history)
    if script == "rl" and losses and not rewards or script == "sft" and rewards:
        other = "an SFT" if script == "rl" else "an RL"
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint}: {other} checkpoint; {script}.py resumes only "
                              f"its own (to start from those weights, give the directory as --{model_flag})")
    try:
        ours = json.loads(Path(model_dir, "config.json").read_text(encoding="utf-8"))
        theirs = json.loads(Path(checkpoint, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no readable config on one side: from_pretrained will say more than we can
    differ = [k for k in SHAPE_KEYS if k in ours and k in theirs and ours[k] != theirs[k]]
    if differ:
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint}: a model of another shape than --{model_flag} "
                              f"({', '.join(f'{k} {theirs[k]} vs {ours[k]}' for k in differ)})")


def resumed_step(checkpoint) -> int:
    """global_step stored in a (complete) checkpoint; 0 for a fresh run (checkpoint None)."""
    if checkpoint is None:
        return 0
    return json.loads(Path(checkpoint, TRAINER_STATE).read_text(encoding="utf-8"))["global_step"]


def whole_run_mean_loss(log_history: list[dict], this_run_mean: float, first_step: int, last_step: int) -> float:
    """Mean training loss of the whole run, also after a resume.

    Transformers' `TrainOutput.training_loss` averages only the steps trained by this process
    (first_step, last_step]. The steps before come from the logged losses the checkpoint carried
    in its log_history: each logged "loss" is the mean over the steps since the previous log, so it
    is weighted by that interval. Steps between the last log and `first_step` are unknown and left out.
    """
    if first_step == 0:
        return this_run_mean
    total, counted, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= first_step:
            total += entry["loss"] * (entry["step"] - previous)
            counted += entry["step"] - previous
            previous = entry["step"]
    steps_now = last_step - first_step
    return (total + this_run_mean * steps_now) / max(counted + steps_now, 1)


# Checkpoint policy shared by sft.py and rl.py: few checkpoints, and no full save at the last step.
#
# A Trainer checkpoint holds the weights plus the optimizer state (Adam: ~16 bytes/parameter with
# fp32 master weights, i.e. ~112 GB at 7B); `final_checkpoint` already holds the end-of-run weights.


class NoCheckpointAtLastStep(TrainerCallback):
    """Cancel the Trainer's save at the final step (transformers saves there whatever save_steps is):
    final_checkpoint, written right after training, is the one end-of-run copy."""

    def on_step_end(self, args, state, control, **kwargs):
        # load_best_model_at_end needs every evaluated step saved: leave that case to the Trainer
        if state.max_steps > 0 and state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False
        return control


class StopAfterStep(TrainerCallback):
    """--stop_after_step N: end the run after optimizer step N with a checkpoint, the schedule still counting to
    max_steps; `--resume_from_checkpoint true` continues it. For jobs under a scheduler's time limit, and the
    rehearsal's kill-free resume. `stopped` tells the script to skip its end-of-run save."""

    def __init__(self, step: int):
        self.step, self.stopped = step, False

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save, control.should_training_stop, self.stopped = True, True, True
        return control


@contextlib.contextmanager
def no_partial_checkpoint(trainer):
    """Around trainer.train: a checkpoint save that finds no room (a full disk) removes its half-written
    checkpoint-N (resume would skip it; it only holds space) and ends as one line naming it (DiskFullError).
    The Trainer writes checkpoint-N in place, not through minionerec.run.atomic."""
    try:
        yield
    except Exception as e:
        partial = Path(trainer.args.output_dir, f"checkpoint-{trainer.state.global_step}")
        reason = no_room_reason(e)
        if reason is None or not partial.is_dir() or incomplete_reason(partial) is None:
            raise
        if trainer.is_world_process_zero():
            shutil.rmtree(partial, ignore_errors=True)
        raise DiskFullError(disk_full_message(partial, reason)) from e


def check_stop_after(stop_after_step: int, max_steps: int) -> None:
    """--stop_after_step: 0 (off), or a step before the run's last (at the last step the run ends anyway)."""
    if stop_after_step < 0 or (max_steps > 0 and stop_after_step >= max_steps):
        raise SystemExit(f"error: --stop_after_step must be 0 (off) or a step before --max_steps {max_steps}, "
                         f"got {stop_after_step}")


def resume_point(args, model_flag: str, script: str) -> tuple[str | None, int]:
    """(checkpoint, its step) for sft.py / rl.py, checked before anything loads: --resume_from_checkpoint resolved
    to the newest complete checkpoint (None: a fresh run, step 0), at a step before --max_steps, of this script and
    of the model --`model_flag` names; and --stop_after_step. The step is read now: save_total_limit may rotate that
    checkpoint away during training."""
    checkpoint = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    first_step = resumed_step(checkpoint)
    check_resume_within(first_step, args.max_steps)
    check_stop_after(args.stop_after_step, args.max_steps)
    check_resume_matches(checkpoint, getattr(args, model_flag), model_flag, script)
    return checkpoint, first_step
