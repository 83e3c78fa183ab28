"""minionerec.model.lora (the adapters themselves train in tests/integration/test_bigmodels.py)."""
from minionerec.model.lora import checkpointing_kwargs


def test_lora_under_zero3_checkpoints_reentrant_as_trl_does():
    assert checkpointing_kwargs(lora=True, zero_stage=3) == {"use_reentrant": True}
    assert checkpointing_kwargs(lora=True, zero_stage=2) == checkpointing_kwargs(lora=False, zero_stage=3) == {
        "use_reentrant": False}
