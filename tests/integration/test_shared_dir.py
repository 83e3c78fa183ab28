"""minionerec.run.shared_dir: several nodes must share one output_dir (two gloo processes stand for two nodes)."""
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import free_port
from minionerec.run.shared_dir import check_shared_output_dir


def node(rank: int, port: int, dirs: list[str], results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                      GROUP_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        check_shared_output_dir(dirs[rank], wait=0.5)
        results[rank] = "ok"
    except SystemExit as e:
        results[rank] = str(e.code)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("shared", [True, False])
def test_every_node_must_see_the_output_dir(tmp_path, shared):
    dirs = [str(tmp_path / "out")] * 2 if shared else [str(tmp_path / "node0"), str(tmp_path / "node1")]
    results = mp.Manager().dict()
    mp.start_processes(node, args=(free_port(), dirs, results), nprocs=2, start_method="fork")
    if shared:
        assert dict(results) == {0: "ok", 1: "ok"}
        assert not list((tmp_path / "out").iterdir())  # the probe file is gone
    else:  # every rank stops, naming its output_dir and node 1, which cannot see node 0's file
        for rank in (0, 1):
            assert results[rank].startswith(f"error: --output_dir {dirs[rank]}: node(s) 1 do not see the files node 0 "
                                            "writes there; several nodes need one output directory")
