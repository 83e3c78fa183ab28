"""Bad input through a launcher (sft.sh, evaluate.sh, rl.sh) is one line on stderr and exit code 2, and nothing is
launched: the topology variables are checked and the script's own checks run once (minionerec.run.prelaunch)
before torchrun / accelerate start any process."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import CATEGORY, ROOT

pytestmark = pytest.mark.slow  # each case starts a launcher; the dry-run cases load the tokenizer and data

TOPOLOGY = ("NPROC", "GPUS_PER_NODE", "NNODES", "NODE_RANK", "NUM_PROCESSES", "MASTER_ADDR", "MASTER_PORT", "PORT",
            "WORLD_SIZE", "RANK", "LOCAL_RANK")


def launch(launcher: str, env: dict, *flags: str, tmp_path) -> subprocess.CompletedProcess:
    fake = tmp_path / "accelerate"  # rl.sh: a stand-in that records a start (accelerate itself is tested in slow/)
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path / 'started'}\n")
    fake.chmod(0o755)
    full = {k: v for k, v in os.environ.items() if k not in TOPOLOGY}
    full.update(PYTHON=sys.executable, ACCELERATE=str(fake), RECIPE="recipes/demo.yaml", OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", launcher, *flags], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "[WARNING]" not in line]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def paths(demo_data, tiny_model_dir, tmp_path):
    return {"DATA_DIR": str(demo_data), "CATEGORY": CATEGORY, "BASE_MODEL": str(tiny_model_dir),
            "MODEL": str(tiny_model_dir), "MODEL_PATH": str(tiny_model_dir), "CONFIG": "config/zero2_cpu.yaml",
            "OUTPUT_DIR": str(tmp_path / "out"), "RESULT_JSON": str(tmp_path / "out" / "predictions.json")}


@pytest.mark.parametrize("launcher", ["sft.sh", "evaluate.sh", "rl.sh"])
def test_a_misspelt_flag_is_one_line_and_launches_nothing(launcher, paths, tmp_path):
    line = one_error_line(launch(launcher, {**paths, "NPROC": "1"}, "--lerning_rate", "1", tmp_path=tmp_path))
    assert line == "error: unknown flag(s): --lerning_rate (see --help)"
    assert not (tmp_path / "out").exists() and not (tmp_path / "started").exists()


NO_ADDR = ("error: NNODES=2 needs MASTER_ADDR: the address of node 0, the same on every node (without it each node "
           "waits for a rendezvous on its own 127.0.0.1)")


# every launcher runs the one resolver (its cases: tests/unit/test_topology.py); node 1 without node 0's address
# would wait for a rendezvous on its own 127.0.0.1 until a timeout, in each launcher
@pytest.mark.parametrize("launcher, env, message", [
    ("sft.sh", {"NPROC": "0"}, "error: NPROC must be a positive integer, got '0'"),
    ("evaluate.sh", {"NPROC": "1", "NNODES": "2", "NODE_RANK": "2", "MASTER_PORT": "29999"},
     "error: NODE_RANK must be 0 .. 1 (NNODES=2), got '2'"),
    *[(launcher, {"NPROC": "1", "NNODES": "2", "NODE_RANK": "1"}, NO_ADDR)
      for launcher in ("sft.sh", "evaluate.sh", "rl.sh")],
])
def test_bad_topology_variables_are_one_line(launcher, env, message, paths, tmp_path):
    assert one_error_line(launch(launcher, {**paths, **env}, tmp_path=tmp_path)) == message
    assert not (tmp_path / "started").exists()


def test_a_batch_that_does_not_divide_the_world_is_reported_once(paths, tmp_path):
    """3 processes: the check sees the world of 3 about to start, and prints its line once, not once per process."""
    line = one_error_line(launch("sft.sh", {**paths, "NPROC": "3"}, "--batch_size", "10", "--micro_batch_size", "4",
                                 tmp_path=tmp_path))
    assert line == "error: --batch_size 10 is not divisible by --micro_batch_size 4 x 3 processes"


def test_three_nodes_of_a_two_process_cpu_yaml_is_one_line(paths, tmp_path):
    """NNODES=3 with config/zero2_cpu.yaml (2 processes in all) once ended in a torch elastic AssertionError."""
    line = one_error_line(launch("rl.sh", {**paths, "NNODES": "3", "MASTER_ADDR": "127.0.0.1"}, tmp_path=tmp_path))
    assert line.startswith("error: NNODES=3 does not divide num_processes 2 of config/zero2_cpu.yaml")
    assert not (tmp_path / "started").exists()
