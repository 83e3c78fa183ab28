"""One recipe, one run, at every world size: `bash rl.sh` (accelerate + DeepSpeed ZeRO-2 on CPU, gloo) with 1, 2 and 4
processes trains the same global batch of completions a step and the same number of optimizer steps; rl.py's batch
is global, as sft.py's (on 16 GPUs the old per-process batch doubled the completions a step and halved the steps)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from minionerec.data.formats import sid_string
from minionerec.run.plan import parse

pytestmark = pytest.mark.slow
# the demo recipe's rl section, shrunk on the command line: 16 completions (4 prompts x G=4) a step, 6 prompts of
# each task (sid_history, title2sid, title_history: 18 prompts, 4 whole steps), one epoch
FLAGS = ["--batch_size", "16", "--micro_batch_size", "4", "--num_generations", "4", "--sample", "6",
         "--num_train_epochs", "1", "--max_steps", "-1", "--save_steps", "100", "--logging_steps", "1"]


def launch(world: int, demo_data: Path, model_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "NNODES", "NODE_RANK", "NUM_PROCESSES")}
    env.update(ACCELERATE=str(Path(sys.executable).parent / "accelerate"), PYTHON=sys.executable,
               CONFIG="config/zero2_cpu.yaml", NPROC=str(world), RECIPE="recipes/demo.yaml", DATA_DIR=str(demo_data),
               CATEGORY="Demo", MODEL_PATH=str(model_dir), OUTPUT_DIR=str(out), OMP_NUM_THREADS="1",
               PRECHECK="0")  # rl.py prints the plan itself; the documented commands' rehearsals run the pre-check
    return subprocess.run(["bash", "rl.sh", *FLAGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_world_sizes_1_2_4_train_the_same_global_batch_and_steps(demo_data, tiny_model_dir, tmp_path):
    sids = {sid_string(s) for s in json.loads((demo_data / "index" / "Demo.index.json").read_text()).values()}
    runs = {}
    for world in (1, 2, 4):
        out = tmp_path / f"world{world}"
        result = launch(world, demo_data, tiny_model_dir, out)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        plan = parse(result.stdout)
        assert (plan.world, plan.global_batch, plan.accumulation) == (world, 16, 4 // world)
        assert f"world_size={world} distributed=DistributedType.DEEPSPEED" in result.stdout
        assert re.search(r"^  micro_batch_size +4 +command line$", result.stdout, re.M)  # flag over recipe, shown
        state = json.loads((out / "trainer_state.json").read_text())
        steps = sorted(out.glob("completions/completions_*.parquet"))
        logged = [pd.read_parquet(p) for p in steps]
        assert all(len(c) == 16 and all(x.strip() in sids for x in c["completion"]) for c in logged)
        runs[world] = (plan.total_steps, state["global_step"], len(steps))
    assert set(runs.values()) == {(4, 4, 4)}, runs
