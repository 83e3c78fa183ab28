"""SMOKE=1 bash bench/gpu_check.sh on CPU: every stage of the GPU self-check through the real scripts, shrunk."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest



ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu(tmp_path):
    """SMOKE=1 bash bench/gpu_check.sh: every stage runs through the real scripts, shrunk, on CPU."""
    env = {**os.environ, "SMOKE": "1", "OUTPUT_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    # a padded and a packed run of the same rows: equal losses up to float noise (CPU: fp32)
    assert [(s["shape"], s["layout"], s["finite_steps"]) for s in report["sft"]] == [
        ("tiny", "padded", "6/6"), ("tiny", "packed", "6/6")]
    ratio = report["sft_packed_vs_padded"]
    assert len(ratio) == 1 and ratio[0]["steps"] == 6 and ratio[0]["max_loss_diff"] < 1e-3 and ratio[0]["tokens_per_s"] > 0
    assert report["eval"][0]["invalid"] == 0 and report["eval"][0]["users"] == 16
    assert report["eval"][0]["batch"] == "8 (auto)"  # evaluate.py's automatic batch on CPU
    assert report["rl"]["steps_timed"] == 2 and report["rl"]["finite_steps"] == "2/2"
    assert "== gpu_check: cpu" in proc.stdout and "tokens/s" in proc.stdout
    assert "tiny batch 8 packed (sdpa), 4 timed steps" in proc.stdout and "tiny batch 8 packed/padded" in proc.stdout
