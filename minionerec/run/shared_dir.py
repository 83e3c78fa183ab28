"""Several nodes, one output directory: a start-up check that every node sees the files the others write there.

Only global rank 0 writes checkpoints, rotates them and writes final_checkpoint; every node resumes from the checkpoint
it finds in its own output_dir. A node-local output_dir therefore loses node 1's view of every checkpoint: a resume
there silently starts from scratch or from a stale copy. sft.py and rl.py call `check_shared_output_dir` once their
process group is up, before the first step: rank 0 writes a file with a fresh token, every node's first process
looks for it, and a node that cannot see it stops the run with one line naming the fix.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import torch.distributed as dist

WAIT_SECONDS = 10.0  # a shared file system may show a new file to other nodes a moment later


def sees(path: Path, token: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            if path.read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def check_shared_output_dir(output_dir, flag: str = "output_dir", wait: float = WAIT_SECONDS) -> None:
    """Collective (every rank calls it). No-op on one node. SystemExit("error: ...") when a node does not see
    rank 0's file in `output_dir`."""
    if not dist.is_initialized():
        return
    world, local_world = dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    if world == local_world:
        return
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    holder = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    token = holder[0]
    probe = Path(output_dir, f".shared_output_dir.{token}")
    if rank == 0:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    dist.barrier()
    blind = local_rank == 0 and not sees(probe, token, wait)
    node = int(os.environ.get("GROUP_RANK", rank // max(local_world, 1)))
    answers = [None] * world
    dist.all_gather_object(answers, (blind, node))  # [(this process's node cannot see it, its node rank)]
    dist.barrier()
    if rank == 0:
        probe.unlink(missing_ok=True)
    missing = sorted({n for blind, n in answers if blind})
    if missing:
        raise SystemExit(f"error: --{flag} {output_dir}: node(s) {', '.join(map(str, missing))} do not see the files "
                         "node 0 writes there; several nodes need one output directory on a file system they all "
                         "share (NFS, Lustre, ...), as rank 0 alone writes the checkpoints every node resumes from")
