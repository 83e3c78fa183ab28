"""The accelerate YAMLs: loadable by accelerate, and no key that accelerate would silently drop."""
import json
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIG = Path(__file__).resolve().parents[2] / "config"
# The deepspeed_config keys accelerate 1.15 turns into DeepSpeed settings (accelerate/utils/launch.py);
# anything else (e.g. contiguous_gradients) is silently ignored, so it belongs in a DeepSpeed JSON.
APPLIED_DS_KEYS = {"zero_stage", "offload_optimizer_device", "offload_param_device", "zero3_init_flag",
                   "zero3_save_16bit_model", "gradient_accumulation_steps", "gradient_clipping",
                   "deepspeed_config_file", "deepspeed_multinode_launcher"}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG.glob("*.yaml")))
def test_yaml_loads_and_every_deepspeed_key_is_applied(name):
    config = load_config_from_file(str(CONFIG / name))
    assert set(config.deepspeed_config) <= APPLIED_DS_KEYS, name
    if "deepspeed_config_file" in config.deepspeed_config:
        # accelerate refuses these next to a DeepSpeed JSON: they must live in the JSON
        assert config.mixed_precision is None and "zero_stage" not in config.deepspeed_config
        assert (CONFIG.parent / config.deepspeed_config["deepspeed_config_file"]).is_file()


def test_zero2_opt_matches_upstream_settings():
    config = load_config_from_file(str(CONFIG / "zero2_opt.yaml"))
    assert (config.distributed_type, config.num_machines, config.num_processes, config.use_cpu) == (
        "DEEPSPEED", 1, 8, False)
    ds = json.loads((CONFIG / "zero2_opt.json").read_text())
    assert ds["bf16"] == {"enabled": "auto"}  # filled from rl.py's bf16 (GPU support): no hard-coded true
    zero = ds["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    assert zero["contiguous_gradients"] and zero["overlap_comm"] and zero["reduce_scatter"]
    assert zero["reduce_bucket_size"] == zero["allgather_bucket_size"] == 5e8


def test_cpu_variant_is_deepspeed_without_bf16():
    config = load_config_from_file(str(CONFIG / "zero2_cpu.yaml"))
    assert (config.distributed_type, config.use_cpu, config.mixed_precision, config.num_processes) == (
        "DEEPSPEED", True, "no", 2)
    assert config.deepspeed_config["zero_stage"] == 2
