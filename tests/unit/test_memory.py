"""minionerec.model.shapes and minionerec.model.memory: the rehearsal's per-GPU memory arithmetic, by hand."""
import pytest

from minionerec.model.memory import Run, estimate, trainable
from minionerec.model.shapes import SHAPES, Shape


def test_shapes_match_the_published_parameter_counts():
    counts = {"Qwen2.5-0.5B": 0.49, "Qwen2.5-1.5B": 1.54, "Qwen2.5-7B": 7.62, "Qwen2.5-32B": 32.8,
              "Qwen2.5-72B": 72.7, "SmolLM2-135M": 0.135}
    for name, billions in counts.items():
        assert SHAPES[name].parameters / 1e9 == pytest.approx(billions, rel=0.01), name


def test_memory_by_hand():
    shape = Shape("toy", "qwen2", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                  vocab_size=1000, tie_word_embeddings=True)
    p = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128) + 1000 * 64  # q, o; k, v; gate, up, down; the tied embedding
    assert shape.parameters == p
    gb = 1e9
    ddp = estimate(shape, Run(world=8))  # DDP: fp32 weights, gradients, Adam, not sharded
    assert (ddp["weights"], ddp["gradients"], ddp["optimizer"]) == pytest.approx((4 * p / gb, 4 * p / gb, 8 * p / gb))
    zero2 = estimate(shape, Run(world=8, zero_stage=2, reference=True))
    assert (zero2["weights"], zero2["gradients"], zero2["optimizer"], zero2["reference model"]) == pytest.approx(
        (2 * p / gb, 4 * p / 8 / gb, 12 * p / 8 / gb, 2 * p / gb))
    zero3 = estimate(shape, Run(world=8, zero_stage=3, rollout_sequences=1, rollout_tokens=1))
    assert zero3["weights"] == pytest.approx(2 * p / 8 / gb)  # sharded; the rollout gathers the rest
    lora = Run(world=1, lora_r=4, sid_tokens=10)
    assert trainable(shape, lora) == 2 * 4 * (128 + 96 + 96 + 128 + 192 + 192 + 192) + 10 * 64
    # activations: 4 rows x 8 tokens x 2 layers x 2 bytes x (6h + 2 kv + 4 I)
    assert estimate(shape, Run(world=1, micro=4, tokens=8))["activations"] == pytest.approx(
        4 * 8 * 2 * 2 * (6 * 64 + 2 * 32 + 4 * 128) / gb)
