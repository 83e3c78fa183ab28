"""Launcher pre-flight: check the topology variables, then run the script's own checks once, in one process
that knows the world size about to start, before torchrun / accelerate starts any process.

Without it a bad flag through a launcher prints its one `error:` line once per process, wrapped in the launcher's
traceback (torchrun's ChildFailedError, accelerate's CalledProcessError), exit code 1. With it: one line, exit 2,
nothing started. The launchers call it right before they launch:

    python -m minionerec.run.prelaunch --nproc "$NPROC" --nnodes "$NNODES" --node_rank "$NODE_RANK" -- sft.py ARGS...

The check is the script's `--dry_run true` (flags, recipe, files, data rows, tokenizer, batch sizes; no weights)
with MINIONEREC_WORLD_SIZE = nproc x nnodes (or --world_size), which `world_size()` reads; its plan line (processes,
global batch, steps per epoch: minionerec.run.plan) is passed on. It is skipped when the launch is itself a dry run. Standard library only: it starts before any heavy import.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

TARGET_WORLD_SIZE = "MINIONEREC_WORLD_SIZE"
PLAN_PREFIXES = ("[sft] plan:", "[rl] plan:")  # minionerec.run.plan's line, passed on to the launcher's output


def world_size() -> int:
    """The number of processes of this run: WORLD_SIZE under a launcher; in a launcher's pre-check (one
    process) the world it is about to start."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get(TARGET_WORLD_SIZE) or 1)


def positive_int(value: str, name: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"error: {name} must be a positive integer, got {value!r}")
    return int(value)


def is_dry_run(script_args: list[str]) -> bool:
    """--dry_run true|1|yes, --dry_run=true, or a bare --dry_run among the flags."""
    for i, arg in enumerate(script_args):
        if arg == "--dry_run":
            following = script_args[i + 1] if i + 1 < len(script_args) else "true"
            return following.startswith("--") or following.lower() in ("true", "1", "yes", "y")
        if arg.startswith("--dry_run="):
            return arg.split("=", 1)[1].lower() in ("true", "1", "yes", "y")
    return False


def without_dry_run(script_args: list[str]) -> list[str]:
    """The flags less any --dry_run (the check appends its own)."""
    out, skip = [], False
    for i, arg in enumerate(script_args):
        if skip:
            skip = False
        elif arg == "--dry_run":
            skip = i + 1 < len(script_args) and not script_args[i + 1].startswith("--")
        elif not arg.startswith("--dry_run="):
            out.append(arg)
    return out


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("error: usage: python -m minionerec.run.prelaunch [--nproc N] [--nnodes N] [--node_rank R] "
                         "[--world_size W] -- SCRIPT.py ARGS...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m minionerec.run.prelaunch")
    parser.add_argument("--nproc", default="1", help="NPROC: processes per node")
    parser.add_argument("--nnodes", default="1", help="NNODES: nodes")
    parser.add_argument("--node_rank", default="0", help="NODE_RANK: this node's rank, 0 .. NNODES-1")
    parser.add_argument("--world_size", default="", help="all processes, when not NPROC x NNODES (accelerate's total)")
    parser.add_argument("--show_config", action="store_true", help="print the dry run's whole output (the rehearsal "
                        "reads the resolved config from it), not only its plan line")
    opts = parser.parse_args(argv[:split])
    nproc, nnodes = positive_int(opts.nproc, "NPROC"), positive_int(opts.nnodes, "NNODES")
    if not opts.node_rank.isdigit() or int(opts.node_rank) >= nnodes:
        raise SystemExit(f"error: NODE_RANK must be 0 .. {nnodes - 1} (NNODES={nnodes}), got {opts.node_rank!r}")
    world = positive_int(opts.world_size, "NUM_PROCESSES") if opts.world_size else nproc * nnodes
    script, *script_args = argv[split + 1:]
    if is_dry_run(script_args):
        return 0  # the launch itself only checks
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env[TARGET_WORLD_SIZE] = str(world)
    check = subprocess.run([sys.executable, script, *without_dry_run(script_args), "--dry_run", "true"], env=env,
                           capture_output=True, text=True)
    for line in check.stdout.splitlines():  # the run's plan (world, global batch, steps), before anything starts
        if opts.show_config or line.startswith(PLAN_PREFIXES):
            print(line, flush=True)
    if check.returncode != 0:
        errors = [line for line in check.stderr.splitlines() if line.startswith("error: ")]
        print(errors[-1] if errors else check.stderr.rstrip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SystemExit as e:  # the checks' one line: exit code 2, as the scripts' own
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)
        sys.exit(2)
