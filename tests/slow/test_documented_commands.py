"""Every launcher command the README, docs/ and the script and recipe headers document runs as written, rehearsed on
CPU (REHEARSE=1: the recipe end to end with a tiny stand-in model; tests/documented_commands.py finds the commands).

Several nodes run as local launches on 127.0.0.1, one per node rank, their pre-check on; an sbatch command runs its
script with SLURM's variables faked and stand-ins for `srun` and `scontrol`. REHEARSE_QUICK=1 caps the accumulation
at 2 micro-steps (the plan and the memory arithmetic keep the recipe's batch). REHEARSALS_AT_ONCE commands run at a
time (default 2: most use one core; `make test-slow` runs 1, beside the other slow tests).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import free_port
from documented_commands import DRY_ONLY, NOT_RUN, PATH_VARS, SBATCH, Command, documented

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
COMMANDS = documented()
TOPOLOGY = ("NPROC", "GPUS_PER_NODE", "NNODES", "NODE_RANK", "NUM_PROCESSES", "MASTER_ADDR", "MASTER_PORT", "PORT",
            "WORLD_SIZE", "RANK", "LOCAL_RANK", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE")
SRUN = """#!/bin/bash
# srun stand-in: the command once per node of the job, SLURM_NODEID set, all at once; fails when one fails
nodes=$SLURM_JOB_NUM_NODES
for arg in "$@"; do case $arg in --nodes=*) nodes=${arg#--nodes=};; esac; done
while [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < nodes; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
SCONTROL = """#!/bin/bash
# scontrol stand-in: `scontrol show hostnames LIST` -> this box, once per node
for ((i = 0; i < SLURM_JOB_NUM_NODES; i++)); do echo 127.0.0.1; done
"""


def ids(key) -> str:
    where, command = COMMANDS[key][0]
    return f"{where}::{command.text[:80]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """80 items (>= the recipes' 50 beams), 40 users: small enough for two dozen rehearsals."""
    from minionerec.prep.make_demo_data import make_demo_data

    out = tmp_path_factory.mktemp("documented_data")
    make_demo_data(out, category="Demo", items_per_family=10, num_users=40, seed=0)
    return out


def environment(command: Command, data: Path, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TOPOLOGY}
    env.update({k: v for k, v in command.env if k not in PATH_VARS | {"NNODES", "NODE_RANK"}})
    env.update(REHEARSE="1", REHEARSE_QUICK="1", REHEARSAL_DIR=str(work / "rehearsal"), DATA_DIR=str(data),
               CATEGORY="Demo", PYTHON=sys.executable, ACCELERATE=str(Path(sys.executable).parent / "accelerate"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", OUTPUT_DIR=str(work / "out"))
    return env


def run(command: Command, data: Path, work: Path) -> tuple[int, str]:
    """Run one documented command (every node of it); returns (worst exit code, node 0's output + the others')."""
    started = time.monotonic()
    code, output = launch(command, data, work)
    print(f"{time.monotonic() - started:5.0f} s  exit {code}  {command.text[:100]}", flush=True)
    return code, output


def launch(command: Command, data: Path, work: Path) -> tuple[int, str]:
    work.mkdir(parents=True)
    if command.dry_only() and "--dry_run" not in command.flags:
        command = Command(command.text, command.env, command.launcher, (*command.flags, "--dry_run", "true"),
                          command.sbatch_options)
    env = environment(command, data, work)
    nodes = command.nodes()
    if command.launcher in SBATCH:
        stubs = work / "bin"
        stubs.mkdir()
        for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
            (stubs / name).write_text(text)
            (stubs / name).chmod(0o755)
        port = free_port()
        env.update(PATH=f"{stubs}{os.pathsep}{env['PATH']}", SLURM_JOB_NUM_NODES=str(nodes), SLURM_JOB_ID=str(port),
                   SLURM_JOB_NODELIST=f"node[0-{nodes - 1}]", SLURM_SUBMIT_DIR=str(ROOT), MASTER_PORT=str(port))
        result = subprocess.run(["bash", command.launcher, *command.flags], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=900)
        return result.returncode, result.stdout + result.stderr
    if nodes > 1:
        port = free_port()
        given = dict(command.env)
        if "NNODES" in given:
            env["NNODES"] = given["NNODES"]
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    procs = [subprocess.Popen(["bash", command.launcher, *command.flags], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**env, "NODE_RANK": str(rank)} if nodes > 1
                              else env) for rank in range(nodes)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    if command.launches() == "rl.sh" and nodes > 1:  # accelerate's multi-node DeepSpeed launch writes ./.deepspeed_env
        (ROOT / ".deepspeed_env").unlink(missing_ok=True)
    return max(p.returncode for p in procs), "\n".join(outputs)


@pytest.fixture(scope="module")
def results(request, data, tmp_path_factory) -> dict:
    """Every selected command's (exit code, output), two commands at a time."""
    work = tmp_path_factory.mktemp("documented")
    selected = {item.callspec.params["key"] for item in request.session.items
                if getattr(item, "callspec", None) and "key" in item.callspec.params}
    keys = [k for k in COMMANDS if k in selected and COMMANDS[k][0][1].text not in NOT_RUN]
    with ThreadPoolExecutor(int(os.environ.get("REHEARSALS_AT_ONCE", 2))) as pool:
        futures = {k: pool.submit(run, COMMANDS[k][0][1], data, work / f"c{i}") for i, k in enumerate(keys)}
    return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("key", list(COMMANDS), ids=[ids(k) for k in COMMANDS])
def test_documented_command_runs_as_written(key, results):
    where, command = COMMANDS[key][0]
    if command.text in NOT_RUN:
        pytest.skip(NOT_RUN[command.text])
    code, output = results[key]
    assert code == 0, f"{where}: {command.text}\n{output[-4000:]}"
    assert "[rehearsal] 1-precheck: ok" in output and "== rehearsal of" in output, output[-3000:]
    if "--dry_run" not in command.flags and not command.dry_only():
        assert "[rehearsal] 3-resume-to-step-4: ok" in output or command.launches() == "evaluate.sh", output[-3000:]


def test_every_command_is_run_or_listed():
    """NOT_RUN and DRY_ONLY name documented commands only, and the node-1 rl.sh command (the pre-check once refused
    it) runs."""
    texts = {c.text for found in COMMANDS.values() for _, c in found}
    assert set(NOT_RUN) <= texts, set(NOT_RUN) - texts
    assert all(any(c.dry_only() == reason for found in COMMANDS.values() for _, c in found[:1])
               for _, reason in DRY_ONLY)  # each entry matches the command a rehearsal runs
    node1 = [c for found in COMMANDS.values() for _, c in found
             if c.launcher == "rl.sh" and dict(c.env).get("NODE_RANK") == "1" and "two_nodes" in dict(c.env)["CONFIG"]]
    assert node1 and node1[0].nodes() == 2
