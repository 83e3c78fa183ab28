"""The end of a training run, where saving lives: final_checkpoint (LoRA merged, bf16 when the run trained in bf16,
written atomically), the best evaluated weights chosen by --keep_best (best_checkpoint -> final_checkpoint),
trainer_state.json, rank 0's peak GPU memory, and the process group torn down after every output is written.
sft.py and rl.py end with finish_training (or, after --stop_after_step, with stopped)."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import torch
import torch.distributed as dist

from minionerec.model.lora import is_lora_model, save_merged
from minionerec.run.atomic import atomic_dir, atomic_path, atomic_write_text, naming_disk_full, replace_dir
from minionerec.run.distributed import teardown_distributed
from minionerec.run.throughput import peak_gpu_memory

BEST_STEP = "best_step.txt"  # in best_checkpoint/: the step whose weights it holds


def autocast_master_weights(trainer, model) -> bool:
    """True when the weights are fp32 master copies of a bf16 run: DDP or one device with autocast (DeepSpeed and
    LoRA runs load bf16 weights, see training_dtype). Every rank holds the whole model then."""
    return (trainer.args.bf16 and model.dtype == torch.float32
            and not trainer.is_deepspeed_enabled and not trainer.is_fsdp_enabled)


def save_in_dtype(model, out_dir: Path, dtype: torch.dtype) -> None:
    """save_pretrained with every floating tensor cast to `dtype` on the CPU (the live weights stay as they are:
    training may go on), and config.json's dtype saying so. A bf16 run's checkpoint is then bf16 like upstream's
    (1.5B: 3.1 GB instead of 6.2 GB), not its fp32 master copy."""
    state, seen = {}, set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # a tied copy (lm_head = embed_tokens): saved once, as save_pretrained does
            continue
        seen.add(tensor.data_ptr())
        state[key] = tensor.detach().to("cpu", dtype) if tensor.is_floating_point() else tensor.detach().cpu()
    model.save_pretrained(out_dir, state_dict=state)
    config_path = Path(out_dir, "config.json")
    config = json.loads(config_path.read_text())
    config["dtype"] = str(dtype).split(".")[1]  # save_pretrained writes the live weights' dtype
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_final_checkpoint(trainer, tokenizer, output_dir, name: str = "final_checkpoint") -> Path:
    """Write output_dir/NAME (model + tokenizer; LoRA merged). Every rank must call it:
    under DeepSpeed/DDP the weights are gathered and rank 0 writes them.

    Atomic: the writer saves into a sibling directory named after its process, then renames it onto
    final_checkpoint, so a kill never leaves a half-written one. The writer is the process that
    transformers lets write weights: `args.should_save` and global rank 0 (on CPU torchrun every
    process has should_save, but only rank 0 gets weights; the others' partial copies are dropped). A full disk
    is a DiskFullError naming final_checkpoint."""
    final_dir = Path(output_dir, name)
    tmp_dir = Path(output_dir, f".{name}.{socket.gethostname()}-{os.getpid()}.tmp")
    with naming_disk_full(final_dir):
        try:
            model = trainer.accelerator.unwrap_model(trainer.model)
            writer = trainer.args.should_save and (not dist.is_initialized() or dist.get_rank() == 0)
            if is_lora_model(model):
                save_merged(trainer, tmp_dir)  # a plain model, adapters merged in
            elif autocast_master_weights(trainer, model):
                if writer:
                    save_in_dtype(model, tmp_dir, torch.bfloat16)
            else:
                trainer.save_model(tmp_dir)
            if writer:
                tokenizer.save_pretrained(tmp_dir)
                replace_dir(tmp_dir, final_dir)
        finally:  # a failed save (disk full, ...) leaves no partial copy behind; after the rename there is none
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def keep_best_checkpoint(guard, model_path, output_dir, writer: bool, script: str = "rl") -> Path:
    """The best evaluated weights become final_checkpoint: best_checkpoint, or a copy of the starting
    checkpoint (`model_path`) when no evaluation beat step 0 (RL's guard scores it; SFT's early stopping
    does not). guard: the ranking evaluation (minionerec.ranking.callback.ConstrainedEvalCallback) with its best
    and its curve. The curve and the choice go to guard.json; `writer` (the main process) does the file work."""
    final_dir = Path(output_dir, "final_checkpoint")
    best = guard.best
    if writer:
        if best["step"] == 0:
            with atomic_dir(final_dir) as tmp:
                shutil.copytree(model_path, tmp, dirs_exist_ok=True)
        else:
            replace_dir(Path(output_dir, "best_checkpoint"), final_dir)
            Path(final_dir, BEST_STEP).unlink(missing_ok=True)
        choice = {"metric": guard.best_metric, "chosen_step": best["step"], "chosen": best[guard.best_metric],
                  "start": guard.history[0][guard.best_metric] if guard.score_start else None,
                  "curve": guard.history}
        atomic_write_text(Path(output_dir, "guard.json"), json.dumps(choice, indent=1))
        start = f"at step 0 (the starting weights) {choice['start']:.4f}, " if guard.score_start else ""
        kept = "the starting weights" if best["step"] == 0 else f"step {best['step']}"
        print(f"[{script}] keep_best: valid {guard.best_metric} {start}best {choice['chosen']:.4f} at step "
              f"{best['step']} of {guard.history[-1]['step']} evaluated -> final_checkpoint = {kept}")
    return final_dir


def finish_training(trainer, tokenizer, output_dir, ranking, start_dir, script: str, report) -> Path:
    """The end of a run, shared by sft.py and rl.py: final_checkpoint = the best evaluated weights (under
    --keep_best, once `ranking`, the in-training ranking evaluation or None, has a best; `start_dir` = the starting
    checkpoint, kept when step 0 scored best) or the last ones; then, on the main process, `report(final_dir)` and
    trainer_state.json (losses / rewards per step); then the process group is torn down, explicitly, after every
    output is written (avoids rare exit-time aborts)."""
    writer = trainer.is_world_process_zero()
    if ranking is not None and ranking.keep_best and ranking.best is not None:
        final_dir = keep_best_checkpoint(ranking, start_dir, output_dir, writer, script)
    else:
        final_dir = save_final_checkpoint(trainer, tokenizer, output_dir)
    if writer:
        report(final_dir)
        with atomic_path(Path(output_dir, "trainer_state.json")) as tmp:
            trainer.state.save_to_json(str(tmp))
        write_peak_memory(output_dir, script)
    teardown_distributed()
    return final_dir


def write_peak_memory(output_dir, script: str) -> None:
    """Rank 0's peak GPU memory to output_dir/gpu_memory.json and one line (nothing on a machine without CUDA)."""
    peak = peak_gpu_memory()
    if peak is not None:
        atomic_write_text(Path(output_dir, "gpu_memory.json"), json.dumps(peak, indent=1))
        print(f"[{script}] peak GPU memory of rank 0: {peak['max_allocated_gb']} GB allocated, "
              f"{peak['max_reserved_gb']} GB reserved ({peak['device']})", flush=True)


def stopped(trainer, script: str):
    """The end of a run cut by --stop_after_step: its checkpoint is written, final_checkpoint is not; the process
    group is torn down as at a normal end. Returns the trainer."""
    if trainer.is_world_process_zero():
        print(f"[{script}] stopped after step {trainer.state.global_step} (--stop_after_step) with "
              f"checkpoint-{trainer.state.global_step}; continue with --resume_from_checkpoint true", flush=True)
    teardown_distributed()
    return trainer
