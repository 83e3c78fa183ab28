"""Process-group plumbing shared by the entry scripts (torchrun / accelerate launch). The launchers' topology (and
their free rendezvous port) is minionerec.run.topology."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist



def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device) under torchrun; (0, 1, cuda:0 or cpu) otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # generous timeout: rank 0 may still be decoding its last batch while others wait in gather
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return rank, world_size, device


def cpu_ddp_backend(processes: int) -> str | None:
    """The Trainer's `ddp_backend` for sft.py / rl.py: "gloo" for several processes without CUDA, else the default.
    Without it the Trainer (sft.py under torchrun) and accelerate's DeepSpeed state (rl.py) see a world of one on
    every CPU rank, so each process would silently train alone on all the data."""
    return "gloo" if processes > 1 and not torch.cuda.is_available() else None


def gather_to_rank0(local: dict, rank: int, world_size: int) -> dict | None:
    """Merge every process's dict on rank 0 (None elsewhere). Objects travel pickled over the group."""
    if world_size == 1:
        return local
    gathered = [None] * world_size if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if rank != 0:
        return None
    merged = {}
    for part in gathered:
        merged.update(part)
    return merged


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
