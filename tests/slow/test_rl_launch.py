"""The real launch path: `bash rl.sh` -> accelerate launch -> DeepSpeed ZeRO-2 (CPU, gloo), 2 processes."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port
from minionerec.data.formats import sid_string

ROOT = Path(__file__).resolve().parents[2]


def launch(demo_data, model_dir, out, port) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ACCELERATE": str(Path(sys.executable).parent / "accelerate"),  # the venv's launcher
        "CONFIG": "config/zero2_cpu.yaml", "NUM_PROCESSES": "2", "PORT": str(port), "RECIPE": "recipes/demo.yaml",
        "DATA_DIR": str(demo_data), "CATEGORY": "Demo", "MODEL_PATH": str(model_dir), "OUTPUT_DIR": str(out),
        "OMP_NUM_THREADS": "1",
    }
    # shrunk (command line over the demo recipe): 4 completions per process = one group of G=4 each;
    # no mid-run checkpoints
    flags = ["--train_batch_size", "4", "--num_generations", "4", "--max_steps", "2", "--save_steps", "100",
             "--title_history_sample", "50", "--add_gt", "true"]
    return subprocess.run(["bash", "rl.sh", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=400)


def outputs_complete(out: Path) -> bool:
    return (out / "final_checkpoint" / "model.safetensors").is_file() and (
        out / "completions" / "completions_00002.parquet").is_file()


@pytest.mark.slow
def test_rl_sh_zero2_two_processes(demo_data, tiny_model_dir, tmp_path):
    result = launch(demo_data, tiny_model_dir, tmp_path / "run", port=free_port())
    if result.returncode != 0 and outputs_complete(tmp_path / "run") and "[rl] done" in result.stdout:
        # Known flake (~1 in 15 on CPU gloo): a rank aborts during interpreter exit after training
        # finished and every output was written. Retry once; a real failure fails twice.
        result = launch(demo_data, tiny_model_dir, tmp_path / "retry", port=free_port())
        out = tmp_path / "retry"
    else:
        out = tmp_path / "run"
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "world_size=2 distributed=DistributedType.DEEPSPEED" in result.stdout
    assert "[rl] done: steps=2" in result.stdout
    assert outputs_complete(out)
    assert re.search(r"^  train_batch_size +4 +command line$", result.stdout, re.M)  # flag over recipe, shown
    sids = {sid_string(s) for s in pd.read_json(demo_data / "index" / "Demo.index.json", typ="series")}
    logged = pd.read_parquet(out / "completions" / "completions_00002.parquet")
    assert len(logged) == 8  # gathered from both processes: 2 x 4 completions
    assert all(c.strip() in sids for c in logged["completion"])
