"""Kill anywhere, resume bit-exact: real sft.py / rl.py processes are SIGKILLed (tests/fault_driver.py) at several
points of a checkpoint save, resumed with `--resume_from_checkpoint true`, and the final weights must equal an
uninterrupted run's bit for bit (CPU, one thread)."""
import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import CATEGORY, ROOT, split_path


def weights_hash(checkpoint: Path) -> str:
    """sha256 over every tensor's name and raw bytes (not the file: safetensors metadata may differ)."""
    weights, digest = load_file(str(checkpoint / "model.safetensors")), hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def run_script(*argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def kill_chain(script, flags, out, kills):
    """A clean run in out/clean, then in out/faulty one process per kill point, each resuming the last;
    returns (clean stdout, final stdout, warnings seen on resume)."""
    clean = run_script(script, *flags, "--output_dir", str(out / "clean"))
    assert clean.returncode == 0, clean.stderr[-3000:]
    warnings = []
    for i, (point, step) in enumerate(kills):
        resume = ["--resume_from_checkpoint", "true"] if i else []
        killed = run_script("tests/fault_driver.py", point, str(step), script, *flags, *resume,
                            "--output_dir", str(out / "faulty"))
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
        warnings += [line for line in killed.stderr.splitlines() if line.startswith("warning: skipping")]
    final = run_script(script, *flags, "--resume_from_checkpoint", "true", "--output_dir", str(out / "faulty"))
    assert final.returncode == 0, final.stderr[-3000:]
    warnings += [line for line in final.stderr.splitlines() if line.startswith("warning: skipping")]
    return clean.stdout, final.stdout, warnings


def data_flags(data, model_flag, model):
    return [f"--{model_flag}", str(model), "--train_file", str(split_path(data, "train")),
            "--sid_index_path", str(data / "index" / f"{CATEGORY}.index.json"),
            "--item_meta_path", str(data / "index" / f"{CATEGORY}.item.json")]


# kill points, in order; each run resumes from the newest complete checkpoint of the one before
SFT_KILLS = [("empty_dir", 2), ("weights_only", 3), ("torn_state", 4)]


@pytest.mark.slow
def test_sft_killed_three_times_resumes_to_the_uninterrupted_weights(demo_data, tiny_model_dir, tmp_path):
    # 16 rows, 2 steps per epoch: the 5 steps cross epoch boundaries, so the data order must resume too.
    # Runs: clean; killed at save 2 (empty dir); resumes from 1, killed at save 3 (weights only); resumes
    # from 2, killed at save 4 (torn trainer_state.json); resumes from 3 (mid-epoch) and finishes.
    flags = data_flags(demo_data, "base_model", tiny_model_dir) + [
        "--sample", "16", "--batch_size", "8", "--micro_batch_size", "8", "--max_steps", "5", "--learning_rate", "1e-2",
        "--warmup_steps", "0", "--task_item_alignment", "false", "--task_sid_history_title", "false",
        "--logging_steps", "1", "--save_steps", "1", "--save_total_limit", "10"]
    clean, final, warnings = kill_chain("sft.py", flags, tmp_path, SFT_KILLS)
    assert [re.search(r"checkpoint-(\d+): (.*)", w).groups() for w in warnings] == [
        ("2", "no trainer_state.json (the save was interrupted)"),
        ("3", "no trainer_state.json (the save was interrupted)"),
        ("4", "trainer_state.json is truncated (the save was interrupted)")]
    clean_hash, resumed_hash = (weights_hash(tmp_path / d / "final_checkpoint") for d in ("clean", "faulty"))
    print(f"sft weights sha256: uninterrupted {clean_hash}  killed 3x + resumed {resumed_hash}")
    assert clean_hash == resumed_hash
    # the summary covers the whole run, not only the steps after the last resume
    summary = re.compile(r"mean_train_loss=(\S+)")
    assert summary.search(clean).group(1) == summary.search(final).group(1)


# one kill for RL (each rl.py process costs ~10 s of CPU): TRL's _save_checkpoint only adds a model card
# to Transformers', whose other kill points the SFT chain covers
RL_KILLS = [("torn_state", 3)]


@pytest.mark.slow
def test_rl_killed_during_a_save_resumes_to_the_uninterrupted_weights(demo_data, tiny_model_dir, tmp_path):
    flags = data_flags(demo_data, "model_path", tiny_model_dir) + [
        "--batch_size", "8", "--micro_batch_size", "8", "--num_generations", "4", "--max_steps", "4", "--save_steps", "1",
        "--learning_rate", "1e-2", "--title_history_sample", "50", "--add_gt", "true", "--reward_type", "ranking",
        "--gradient_checkpointing", "false"]
    clean, final, warnings = kill_chain("rl.py", flags, tmp_path, RL_KILLS)
    assert [re.search(r"checkpoint-(\d+): (.*)", w).groups() for w in warnings] == [
        ("3", "trainer_state.json is truncated (the save was interrupted)")]
    clean_hash, resumed_hash = (weights_hash(tmp_path / d / "final_checkpoint") for d in ("clean", "faulty"))
    print(f"rl weights sha256: uninterrupted {clean_hash}  killed in a save + resumed {resumed_hash}")
    assert clean_hash == resumed_hash
    reward = re.compile(r"mean_reward=(\S+)")
    assert reward.search(clean).group(1) == reward.search(final).group(1)
