"""Two machine ranks on 127.0.0.1 (two local launches, CPU, gloo): every launcher starts GPUS_PER_NODE
processes on each node and NNODES x GPUS_PER_NODE in all. The scripts run with --dry_run true, whose
printed config (first process of each node) shows the world sizes the launcher set."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
NODES, PER_NODE = 2, 2  # 2 processes per node: the bug gave 1 per node (the total divided by nodes)


def launch_env(launcher: str, node_rank: int, port: int, demo_data: Path, model_dir: Path, out: Path,
               config: str = "config/zero2_cpu.yaml") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NNODES": str(NODES), "NODE_RANK": str(node_rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "DATA_DIR": str(demo_data), "CATEGORY": "Demo",
           "RECIPE": "recipes/demo.yaml", "PYTHON": sys.executable}
    if launcher == "rl.sh":  # accelerate: the launch YAML + GPUS_PER_NODE -> --num_processes NODES x PER_NODE
        env.update(ACCELERATE=str(Path(sys.executable).parent / "accelerate"), CONFIG=config,
                   GPUS_PER_NODE=str(PER_NODE), MODEL_PATH=str(model_dir), OUTPUT_DIR=str(out))
    else:  # torchrun
        env.update(NPROC=str(PER_NODE), BASE_MODEL=str(model_dir), MODEL=str(model_dir), OUTPUT_DIR=str(out),
                   RESULT_JSON=str(out / "predictions.json"))
    return env


@pytest.mark.slow
@pytest.mark.parametrize("launcher, config", [("sft.sh", None), ("rl.sh", "config/zero2_cpu.yaml"), ("evaluate.sh", None),
                                              # rl.sh's default launch YAML (a GPU one: the dry run loads no weights)
                                              ("rl.sh", "config/zero2_opt.yaml")])
def test_two_nodes_use_every_process(launcher, config, demo_data, tiny_model_dir, tmp_path):
    port = free_port()
    # the demo recipe's SFT batch, 32, must split over 4 processes: micro batch 8 (the dry run checks it)
    extra = ["--micro_batch_size", "8"] if launcher == "sft.sh" else []
    procs = [subprocess.Popen(["bash", launcher, "--dry_run", "true", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=launch_env(launcher, rank, port, demo_data, tiny_model_dir, tmp_path / "out",
                                             **({"config": config} if config else {})))
             for rank in range(NODES)]
    logs = [p.communicate(timeout=400)[0] for p in procs]
    if launcher == "rl.sh":  # accelerate's multi-node DeepSpeed launch appends the environment to ./.deepspeed_env
        (ROOT / ".deepspeed_env").unlink(missing_ok=True)
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, log[-3000:]
        sizes = {k: int(v) for k, v in re.findall(r"^  (WORLD_SIZE|LOCAL_WORLD_SIZE|GROUP_RANK) +'(\d+)'", log, re.M)}
        assert sizes == {"WORLD_SIZE": NODES * PER_NODE, "LOCAL_WORLD_SIZE": PER_NODE, "GROUP_RANK": rank}, log[-3000:]
    assert not (tmp_path / "out").exists()  # dry runs write nothing
