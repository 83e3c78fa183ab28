"""Throughput accounting (minionerec/run/throughput.py) and the GPU self-check's CPU smoke run."""
from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from minionerec.run.throughput import ThroughputCallback, peak_flops, train_flops_per_token


def test_flops_per_token_of_the_qwen2_5_0_5b_shape_by_hand():
    config = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864)
    # per layer: q 896x896, k and v 896x128 each, o 896x896, MLP 3 x 896x4864
    per_layer = 896 * 896 + 2 * 896 * 128 + 896 * 896 + 3 * 896 * 4864
    assert train_flops_per_token(config, mean_seq_len=100) == 6 * 24 * per_layer + 12 * 24 * 896 * 100


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None


def test_counts_real_tokens_of_training_forwards_only():
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=32))
    callback = ThroughputCallback(model)
    ids = torch.ones(2, 6, dtype=torch.long)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    model.train()
    model(input_ids=ids, attention_mask=mask)
    model(input_ids=ids, attention_mask=mask)
    model.eval()
    model(input_ids=ids, attention_mask=mask)  # evaluation: not counted
    assert callback._tokens_seen() == 2 * 10


def test_counts_every_token_of_a_packed_row():
    """A packed batch (minionerec/data/packing.py) has no attention mask and no padding: all its tokens are real,
    so padded and packed runs report tokens/s over the same tokens."""
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=32)).train()
    callback = ThroughputCallback(model)
    model(input_ids=torch.ones(1, 7, dtype=torch.long), position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3]]),
          use_cache=False)
    model(input_ids=torch.ones(2, 6, dtype=torch.long), attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]] * 2))
    assert callback._tokens_seen() == 7 + 8


def test_tokens_per_second_and_mfu_fields(tmp_path):
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=32)).train()
    callback = ThroughputCallback(model, warmup_steps=1, output_dir=str(tmp_path))
    args = SimpleNamespace(world_size=1, per_device_train_batch_size=2, gradient_accumulation_steps=1)
    state = SimpleNamespace(global_step=1, is_world_process_zero=True)
    callback.on_step_end(args, state, None)
    model(input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long))
    state.global_step = 2
    callback.on_train_end(args, state, None)
    result = json.loads((tmp_path / "throughput.json").read_text())
    assert result["tokens"] == 10 and result["timed_steps"] == 1 and result["mean_seq_len"] == 5.0
    assert result["mfu"] is None and result["device"] == "cpu"  # no peak for a CPU


