"""minionerec.run.topology: the one topology every launcher hands its pre-check and its launch (sft.sh, rl.sh,
evaluate.sh run it; the launches themselves: tests/slow/test_documented_commands.py)."""
import pytest

from conftest import ROOT
from minionerec.run.topology import DEFAULT_PORT, Topology, TopologyError, resolve

CPU_YAML, GPU_YAML, TWO_NODES = (str(ROOT / "config" / n) for n in ("zero2_cpu.yaml", "zero2_opt.yaml",
                                                                     "zero2_two_nodes.yaml"))


def topo(launcher, env, yaml="", gpus=0):
    return resolve(launcher, env, yaml, gpus=lambda: gpus, free_port=lambda: 40000)


@pytest.mark.parametrize("launcher", ["sft", "evaluate"])
def test_one_node_defaults_and_visible_gpus(launcher):
    assert topo(launcher, {}) == Topology(1, 1, 0, "127.0.0.1", 40000)  # CPU: one process, a free port
    assert topo(launcher, {}, gpus=8).nproc == 8
    assert topo(launcher, {"GPUS_PER_NODE": "2"}, gpus=8).nproc == 2
    several = topo(launcher, {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}, gpus=8)
    assert several == Topology(8, 2, 1, "10.0.0.1", DEFAULT_PORT[launcher]) and several.world == 16


def test_torchrun_style_variables_of_platforms_are_honoured():
    env = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_NPROC_PER_NODE": "4", "PET_MASTER_ADDR": "master-0",
           "PET_MASTER_PORT": "23456"}
    assert topo("sft", env) == Topology(4, 2, 1, "master-0", 23456)
    assert topo("sft", {**env, "NNODES": "3", "NODE_RANK": "2"}).nnodes == 3  # our own names win


@pytest.mark.parametrize("launcher, yaml", [("sft", ""), ("evaluate", ""), ("rl", GPU_YAML)])
def test_several_nodes_need_a_master_address(launcher, yaml):
    with pytest.raises(TopologyError, match=r"^NNODES=2 needs MASTER_ADDR: the address of node 0"):
        topo(launcher, {"NNODES": "2", "NODE_RANK": "1"}, yaml, gpus=8)


def test_bad_values_are_one_line():
    with pytest.raises(TopologyError, match=r"^NPROC must be a positive integer, got '0'$"):
        topo("sft", {"NPROC": "0"})
    with pytest.raises(TopologyError, match=r"^NODE_RANK must be 0 \.\. 1 \(NNODES=2\), got '2'$"):
        topo("sft", {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "x"})
    with pytest.raises(TopologyError, match=r"^MASTER_PORT must be a positive integer, got 'http'$"):
        topo("sft", {"MASTER_PORT": "http"})


def test_rl_node_counts_come_from_the_yaml_and_agree_with_it():
    # the documented node-1 command: nodes from the YAML's num_machines, processes per node from the visible GPUs,
    # one count for the pre-check and the launch (the pre-check once saw NNODES=1 and refused NODE_RANK=1)
    node1 = topo("rl", {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}, TWO_NODES, gpus=8)
    assert node1 == Topology(8, 2, 1, "10.0.0.1", 29503) and node1.world == 16
    assert topo("rl", {}, GPU_YAML, gpus=4).nproc == 4  # a 4-GPU box, whatever the YAML's num_processes says
    assert topo("rl", {}, GPU_YAML).nproc == 8  # no GPU: the YAML's total over its one machine
    assert topo("rl", {"NUM_PROCESSES": "6", "NNODES": "3", "MASTER_ADDR": "x"}, GPU_YAML).nproc == 2
    assert topo("rl", {}, CPU_YAML, gpus=4).nproc == 2  # a use_cpu YAML keeps its own count on a GPU box
    with pytest.raises(TopologyError, match=r"^NNODES=3 does not divide num_processes 2 of .*zero2_cpu\.yaml"):
        topo("rl", {"NNODES": "3", "MASTER_ADDR": "x"}, CPU_YAML)
    with pytest.raises(TopologyError, match=r"^NUM_PROCESSES=4 contradicts NPROC=1 x NNODES=1"):
        topo("rl", {"NUM_PROCESSES": "4", "NPROC": "1"}, GPU_YAML)
