"""sft.py under torchrun with two processes (CPU, gloo)."""
import sys

import pytest
from transformers import AutoModelForCausalLM

from conftest import free_port, run_cli, sft_args


@pytest.mark.slow
def test_torchrun_two_processes(demo_data, tiny_model_dir, tmp_path):
    args = sft_args(demo_data, tiny_model_dir, tmp_path, micro_batch_size=4, data_cache_dir=str(tmp_path / "cache"))
    flags = [f"--{k}={v}" for k, v in vars(args).items() if v != ""]
    result = run_cli(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                     "--master_port", str(free_port()), "sft.py", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grad_accum=1 world_size=2 trainer_world_size=2" in result.stdout  # the Trainer sees both ranks
    assert "[sft] done: steps=2" in result.stdout
    # one process built the tokenised rows, the other waited and read them (minionerec/data/sft_cache.py)
    assert result.stdout.count("rows built into") == 1 and result.stdout.count("rows read from") == 1
    AutoModelForCausalLM.from_pretrained(tmp_path / "final_checkpoint")


def test_help_lists_flags_with_their_comments():
    result = run_cli(sys.executable, "sft.py", "--help")
    assert result.returncode == 0
    assert "train_only_new_tokens: bool = False  # train only the new SID tokens' rows of the embedding and LM head" in result.stdout
