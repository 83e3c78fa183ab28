"""evaluate.sh with 2 processes gives exactly the 1-process predictions and table."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, free_port


def _run_launcher(nproc: int, out: Path, demo_data: Path, model_dir: Path) -> dict:
    # One thread everywhere: torchrun defaults workers to 1 OpenMP thread, so the 1-process run must match.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NPROC": str(nproc), "MODEL": str(model_dir),
           "DATA_DIR": str(demo_data), "CATEGORY": "Demo", "RESULT_JSON": str(out), "PORT": str(free_port()),
           "PYTHON": str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else "python"}
    proc = subprocess.run(["bash", str(ROOT / "evaluate.sh"), "--sample", "20", "--num_beams", "8", "--batch_size", "3"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{nproc} process(es)" in proc.stdout
    table = proc.stdout[proc.stdout.index("method"):]
    return {"predictions": json.loads(out.read_text()), "table": table}


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, demo_data, tiny_model_dir):
    one = _run_launcher(1, tmp_path / "one.json", demo_data, tiny_model_dir)
    two = _run_launcher(2, tmp_path / "two.json", demo_data, tiny_model_dir)
    assert len(one["predictions"]) == 20
    assert two["predictions"] == one["predictions"]  # every row, every beam, same order
    assert two["table"] == one["table"]


def test_evaluate_cli_takes_upstream_flags(tmp_path, demo_data, tiny_model_dir):
    """The command upstream's evaluate.sh writes (its flag names) runs unchanged, bar the catalogue flag."""
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else "python", str(ROOT / "evaluate.py"),
         "--base_model", str(tiny_model_dir), "--info_file", str(demo_data / "info" / "Demo.txt"),
         "--category", "Demo", "--test_data_path", str(demo_data / "test" / "Demo.csv"),
         "--result_json_data", str(tmp_path / "r.json"), "--batch_size", "4", "--num_beams", "5", "--K", "0",
         "--sample", "4"], capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads((tmp_path / "r.json").read_text())) == 4
