"""Recipes and launch configs through the real command lines and launchers (subprocesses: evaluate.py, rl.py, rl.sh)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, write


def test_unknown_recipe_key_through_the_cli(tmp_path):
    recipe = write(tmp_path / "r.yaml", "rl:\n  lerning_rate: 1.0e-5\n")
    result = subprocess.run([sys.executable, "rl.py", "--recipe", recipe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {recipe}: rl: unknown key 'lerning_rate' (did you mean 'learning_rate'?)")


def test_evaluate_cli_writes_run_config_beside_predictions(demo_data, tiny_model_dir, tmp_path):
    recipe = write(tmp_path / "r.yaml", "evaluate:\n  num_beams: 5\n  batch_size: 4\n")
    out = tmp_path / "eval" / "predictions.json"
    cmd = [sys.executable, "evaluate.py", "--recipe", recipe, "--batch_size", "2", "--sample", "4",
           "--base_model", str(tiny_model_dir), "--test_file", str(demo_data / "test" / "Demo.csv"),
           "--sid_index_path", str(demo_data / "index" / "Demo.index.json"), "--result_json", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^  num_beams +5 +recipe ", result.stdout, re.M)  # printed with its source
    doc = yaml.safe_load((out.parent / "run_config.yaml").read_text())
    assert doc["args"]["num_beams"]["source"].startswith("recipe") and doc["args"]["num_beams"]["value"] == 5
    assert doc["args"]["batch_size"] == {"value": 2, "source": "command line"}
    assert doc["args"]["length_penalty"]["source"] == "default"


def run_rl_sh(config: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """rl.sh with a stand-in `accelerate` that only records that it was started."""
    fake = tmp_path / "accelerate"
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path / 'started'}\n")
    fake.chmod(0o755)
    env = {**os.environ, "ACCELERATE": str(fake), "PYTHON": sys.executable, "CONFIG": config,
           "DATA_DIR": str(tmp_path), "CATEGORY": "none"}
    return subprocess.run(["bash", "rl.sh"], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("make_config, message", [
    (lambda d: write(d / "z.yaml", (ROOT / "config" / "zero2_cpu.yaml").read_text().replace("zero_stage", "zero_stgae")),
     r"z\.yaml: deepspeed_config: unknown key 'zero_stgae' \(did you mean 'zero_stage'\?\)"),
    (lambda d: write(d / "z.yaml", (ROOT / "config" / "ddp.yaml").read_text().replace("num_machines", "num_machine")),
     r"z\.yaml: unknown accelerate key 'num_machine' \(did you mean 'num_machines'\?\)"),
    (lambda d: str(d / "missing.yaml"), r"accelerate config not found: .*missing\.yaml"),
    (lambda d: write(d / "z.yaml", (ROOT / "config" / "zero2_opt.yaml").read_text().replace(
        "config/zero2_opt.json", write(d / "ds.json", '{"zero_optimisation": {"stage": 2}}'))),
     r"ds\.json: unknown DeepSpeed key 'zero_optimisation' \(did you mean 'zero_optimization'\?\)"),
])
def test_bad_launch_config_is_one_line_and_starts_nothing(tmp_path, make_config, message):
    result = run_rl_sh(make_config(tmp_path), tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "[WARNING]" not in line]
    assert len(lines) == 1 and re.fullmatch("error: .*" + message, lines[0]), result.stderr
    assert not (tmp_path / "started").exists()


@pytest.mark.parametrize("topology, expected", [
    # a 4-GPU box: every visible GPU, whatever the YAML's num_processes (8) says; one node, a free port
    ({}, ["--config_file", "config/zero2_opt.yaml", "--num_machines", "1", "--machine_rank", "0", "--num_processes",
          "4", "--main_process_port", "FREE", "rl.py"]),
    # the documented node-1 command: the YAML's 2 machines x the visible GPUs, node 0's address and the YAML's port
    ({"CONFIG": "config/zero2_two_nodes.yaml", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"},
     ["--config_file", "config/zero2_two_nodes.yaml", "--num_machines", "2", "--machine_rank", "1", "--num_processes",
      "8", "--main_process_port", "29503", "--main_process_ip", "10.0.0.1", "rl.py"]),
])
def test_rl_sh_hands_accelerate_the_resolved_topology(demo_data, tmp_path, topology, expected):
    """torch sees 4 GPUs (a sitecustomize patches torch.cuda.device_count in rl.sh's Python); the resolution itself is
    tests/unit/test_topology.py's."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import torch\ntorch.cuda.device_count = lambda: 4\n")
    assert_rl_sh_launches(demo_data, tmp_path, {**topology, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}, expected)


def assert_rl_sh_launches(demo_data, tmp_path, topology: dict, expected: list[str]) -> None:
    fake = tmp_path / "accelerate"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    fake.chmod(0o755)
    topology_vars = ("NNODES", "GPUS_PER_NODE", "NUM_PROCESSES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PORT")
    env = {k: v for k, v in os.environ.items() if k not in topology_vars}
    env.update(ACCELERATE=str(fake), PYTHON=sys.executable, DATA_DIR=str(demo_data), CATEGORY="Demo", PRECHECK="0",
               **topology)  # no SFT checkpoint here: only the launch arguments are under test
    result = subprocess.run(["bash", "rl.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    args = (tmp_path / "args").read_text().split()
    if "FREE" in expected:
        port = args[args.index("--main_process_port") + 1]
        assert port.isdigit() and 1024 <= int(port) < 65536
        expected = [port if a == "FREE" else a for a in expected]
    assert args[:args.index("rl.py") + 1] == ["launch", *expected]
