"""One launch topology for sft.sh, rl.sh and evaluate.sh, resolved once from the environment (and rl.sh's launch YAML).

    topology=$($PYTHON -m minionerec.run.topology sft) || exit $?; eval "$topology"
    topology=$($PYTHON -m minionerec.run.topology rl config/zero2_opt.yaml) || exit $?; eval "$topology"

prints shell assignments of NPROC (processes per node), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT and WORLD
(NPROC x NNODES), which the launcher hands to its pre-check and to torchrun / accelerate: one count for both. A bad
or contradictory value is one `error:` line, exit 2, before anything starts. Each value's sources, first set wins:

    processes per node  NPROC | GPUS_PER_NODE | PET_NPROC_PER_NODE | NPROC_PER_NODE | rl: NUM_PROCESSES / nodes |
                        the visible GPUs (not with a use_cpu YAML) | rl: the YAML's num_processes / nodes | 1
    nodes               NNODES | PET_NNODES | rl: the YAML's num_machines | 1
    node rank           NODE_RANK | PET_NODE_RANK | rl: the YAML's machine_rank | 0
    master address      MASTER_ADDR | PET_MASTER_ADDR | rl: the YAML's main_process_ip | 127.0.0.1 on one node;
                        several nodes need one (node 1 would otherwise wait on its own 127.0.0.1 until a timeout)
    master port         MASTER_PORT | PORT | PET_MASTER_PORT | rl: the YAML's main_process_port |
                        a free port on one node | DEFAULT_PORT[launcher] on several (the same on every node)

PET_* are torchrun's own environment names, which Kubernetes' PyTorchJob (training-operator) and other platforms
set; slurm/*.sbatch sets NNODES / NODE_RANK / MASTER_ADDR from SLURM's variables. Standard library and PyYAML
only, plus torch when the GPUs must be counted: it runs before every launch.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

LAUNCHERS = ("sft", "rl", "evaluate")
# a fixed rendezvous port per launcher when several nodes must agree on one and none is named
DEFAULT_PORT = {"sft": 29501, "rl": 29503, "evaluate": 29502}
NPROC_VARS = ("NPROC", "GPUS_PER_NODE", "PET_NPROC_PER_NODE", "NPROC_PER_NODE")
NNODES_VARS = ("NNODES", "PET_NNODES")
NODE_RANK_VARS = ("NODE_RANK", "PET_NODE_RANK")
ADDR_VARS = ("MASTER_ADDR", "PET_MASTER_ADDR")
PORT_VARS = ("MASTER_PORT", "PORT", "PET_MASTER_PORT")


class TopologyError(ValueError):
    """A topology variable is malformed or contradicts another (or the launch YAML)."""


@dataclass
class Topology:
    nproc: int  # processes per node
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def world(self) -> int:
        return self.nproc * self.nnodes

    def shell(self) -> str:
        values = {"NPROC": self.nproc, "NNODES": self.nnodes, "NODE_RANK": self.node_rank,
                  "MASTER_ADDR": self.master_addr, "MASTER_PORT": self.master_port, "WORLD": self.world}
        return "\n".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())


def first_set(env: dict, names: tuple[str, ...]) -> tuple[str, str] | None:
    """(name, value) of the first variable of `names` set to a non-empty value, or None."""
    return next(((n, env[n]) for n in names if env.get(n, "") != ""), None)


def integer(found: tuple[str, str], minimum: int) -> int:
    name, value = found
    if not value.isdigit() or int(value) < minimum:
        kind = "a positive integer" if minimum else "an integer >= 0"
        raise TopologyError(f"{name} must be {kind}, got {value!r}")
    return int(value)


REHEARSAL_GPUS = "MINIONEREC_REHEARSAL_GPUS"  # set by the launchers under REHEARSE=1: the GPUs a CPU rehearsal pretends


def visible_gpus() -> int:
    if os.environ.get(REHEARSAL_GPUS):
        return int(os.environ[REHEARSAL_GPUS])
    import torch  # only here: the other sources need no torch

    return torch.cuda.device_count()  # honours CUDA_VISIBLE_DEVICES


def yaml_topology(path: str) -> dict:
    """num_processes (accelerate's total over machines), num_machines, machine_rank, main_process_ip/port of a launch
    YAML (minionerec.run.launch_config has checked the file and its keys before this runs)."""
    import yaml

    with open(path) as f:
        config = yaml.safe_load(f) or {}
    return {k: config[k] for k in ("num_processes", "num_machines", "machine_rank", "main_process_ip",
                                   "main_process_port", "use_cpu") if config.get(k) not in (None, "")}


def resolve(launcher: str, env: dict, launch_yaml: str = "", gpus=visible_gpus, free_port=None) -> Topology:
    """The topology `launcher` starts, from `env` (and rl.sh's launch YAML); TopologyError on a bad value."""
    if launcher not in LAUNCHERS:
        raise TopologyError(f"unknown launcher {launcher!r}; one of {', '.join(LAUNCHERS)}")
    cfg = yaml_topology(launch_yaml) if launch_yaml else {}
    where = f" of {launch_yaml}" if launch_yaml else ""

    found = first_set(env, NNODES_VARS)
    nnodes = integer(found, 1) if found else cfg.get("num_machines", 1)
    found = first_set(env, NODE_RANK_VARS)
    node_rank = integer(found, 0) if found else cfg.get("machine_rank", 0)
    if node_rank >= nnodes:
        name = found[0] if found else f"machine_rank{where}"
        raise TopologyError(f"{name} must be 0 .. {nnodes - 1} (NNODES={nnodes}), got '{node_rank}'")

    nproc = per_node(launcher, env, cfg, nnodes, where, gpus)

    found = first_set(env, ADDR_VARS)
    addr = found[1] if found else cfg.get("main_process_ip", "")
    if not addr:
        if nnodes > 1:
            raise TopologyError(f"NNODES={nnodes} needs MASTER_ADDR: the address of node 0, the same on every node "
                                "(without it each node waits for a rendezvous on its own 127.0.0.1)")
        addr = "127.0.0.1"
    found = first_set(env, PORT_VARS)
    if found:
        port = integer(found, 1)
    elif "main_process_port" in cfg:
        port = int(cfg["main_process_port"])
    elif nnodes == 1:  # one node: any free port, so two runs may share a box
        port = (free_port or find_free_port)()
    else:  # several: one port every node knows
        port = DEFAULT_PORT[launcher]
    return Topology(nproc, nnodes, node_rank, addr, port)


def per_node(launcher: str, env: dict, cfg: dict, nnodes: int, where: str, gpus) -> int:
    """Processes per node; rl.sh also takes accelerate's total (NUM_PROCESSES, or the YAML's num_processes on a box
    without GPUs), which must then split evenly over the nodes."""
    found = first_set(env, NPROC_VARS)
    total = ("NUM_PROCESSES", env["NUM_PROCESSES"]) if launcher == "rl" and env.get("NUM_PROCESSES") else None
    if found:
        nproc = integer(found, 1)
        if total and integer(total, 1) != nproc * nnodes:
            raise TopologyError(f"NUM_PROCESSES={total[1]} contradicts {found[0]}={nproc} x NNODES={nnodes}; "
                                "set one of them")
        return nproc
    if total:
        return split(integer(total, 1), nnodes, "NUM_PROCESSES")
    visible = 0 if cfg.get("use_cpu") else gpus()  # a CPU launch YAML runs its own count on any box
    if visible > 0:
        return visible
    if launcher == "rl" and "num_processes" in cfg:  # no GPU: the YAML's own count (accelerate's total)
        return split(cfg["num_processes"], nnodes, f"num_processes {cfg['num_processes']}{where}")
    return 1


def split(total: int, nnodes: int, what: str) -> int:
    if total % nnodes:
        raise TopologyError(f"NNODES={nnodes} does not divide {what} (accelerate's total over all nodes); "
                            "set NPROC, the processes per node")
    return total // nnodes


def find_free_port() -> int:
    """A TCP port free now (the kernel picks an unused ephemeral one); the launcher binds it a moment later."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in LAUNCHERS or len(argv) > 2:
        print("error: usage: python -m minionerec.run.topology sft|rl|evaluate [LAUNCH_YAML]", file=sys.stderr)
        return 2
    try:
        topology = resolve(argv[0], dict(os.environ), argv[1] if len(argv) > 1 else "")
    except TopologyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(topology.shell())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
