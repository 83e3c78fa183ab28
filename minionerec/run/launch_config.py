"""Check launch configs before anything starts: accelerate YAMLs and the DeepSpeed JSONs they name.

    python -m minionerec.run.launch_config config/zero2_opt.yaml      # what rl.sh runs before `accelerate launch`
    python -m minionerec.run.launch_config config/sft_zero3.json      # a DeepSpeed JSON alone

Keys are checked against the libraries' own definitions, so a typo (`zero_stgae: 2`) is one line
instead of a run with silent defaults: the top level of an accelerate YAML against accelerate's
`ClusterConfig` fields, its `deepspeed_config` against the DeepSpeed options of `accelerate launch`
(the only ones accelerate applies), and a DeepSpeed JSON's sections against DeepSpeed's pydantic
config models (zero_optimization incl. offload_*, bf16, fp16) and its config-key constants.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from functools import cache
from pathlib import Path

from minionerec.run.recipe import ConfigError, nearest, read_yaml


@cache
def accelerate_keys() -> tuple[set[str], set[str]]:
    """(top-level keys of an accelerate YAML, keys of its deepspeed_config) as accelerate defines them."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    top = {f.name for f in dataclasses.fields(ClusterConfig)}
    parser = launch_command_parser()
    group = next(g for g in parser._action_groups if g.title == "DeepSpeed Arguments")
    deepspeed = {a.dest for a in group._group_actions} - {"use_deepspeed"}
    return top, deepspeed


def _model_keys(model) -> set[str]:
    """Field names and their aliases (e.g. stage3_max_live_parameters) of a DeepSpeed pydantic model."""
    return {n for name, f in model.model_fields.items() for n in (name, f.alias) if n}


@cache
def deepspeed_models() -> dict:
    """Section -> DeepSpeed's pydantic model for it (extra keys are errors there, but only after the model loads)."""
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import (DeepSpeedZeroOffloadOptimizerConfig,
                                                       DeepSpeedZeroOffloadParamConfig)

    return {"zero_optimization": DeepSpeedZeroConfig, "bf16": DeepSpeedBF16Config, "fp16": DeepSpeedFP16Config,
            "zero_optimization.offload_optimizer": DeepSpeedZeroOffloadOptimizerConfig,
            "zero_optimization.offload_param": DeepSpeedZeroOffloadParamConfig}


@cache
def deepspeed_top_keys() -> set[str]:
    """Top-level DeepSpeed JSON keys: the key constants DeepSpeed's config parser reads, plus its sections."""
    import importlib

    from deepspeed.monitor.config import DeepSpeedMonitorConfig

    keys = set(deepspeed_models()) | _model_keys(DeepSpeedMonitorConfig)
    for name in ("deepspeed.runtime.constants",
                 "deepspeed.runtime.activation_checkpointing.config", "deepspeed.profiling.constants",
                 "deepspeed.runtime.data_pipeline.constants", "deepspeed.elasticity.constants",
                 "deepspeed.comm.constants", "deepspeed.runtime.swap_tensor.constants", "deepspeed.autotuning.constants"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # optional DeepSpeed parts (their sections are then not recognised)
            continue
        keys |= {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)
                 and re.fullmatch(r"[a-z][a-z0-9_]*", v)}
    return keys | {"zero_optimization", "amp", "compile", "compression_training", "sparse_attention", "pipeline",
                   "weight_quantization", "hybrid_engine", "timers"}


def check_deepspeed_json(path: str) -> dict:
    """Load a DeepSpeed JSON; unknown keys (top level, zero_optimization, offload_*, bf16, fp16) raise ConfigError."""
    if not Path(path).is_file():
        raise ConfigError(f"DeepSpeed config not found: {path}")
    try:
        config = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    top = deepspeed_top_keys()
    for key in config:
        if key not in top:
            raise ConfigError(f"{path}: unknown DeepSpeed key {key!r}{nearest(key, top)}")
    for section, model in deepspeed_models().items():
        value = config
        for part in section.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict):
            valid = _model_keys(model)
            for key in value:
                if key not in valid:
                    raise ConfigError(f"{path}: {section}: unknown key {key!r}{nearest(key, valid)}")
    return config


def zero_stage(deepspeed_json: str | None) -> int:
    """The ZeRO stage of a (checked) DeepSpeed JSON; 0 without one."""
    if not deepspeed_json:
        return 0
    return int((json.loads(Path(deepspeed_json).read_text()).get("zero_optimization") or {}).get("stage", 0))


def deepspeed_file_of(yaml_path: str, name: str) -> str:
    """A YAML's deepspeed_config_file, relative to the working directory (as accelerate reads it) or to the
    repo root above config/."""
    for candidate in (Path(name), Path(yaml_path).resolve().parent.parent / name):
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(f"{yaml_path}: deepspeed_config_file not found: {name}")


def check_topology(path: str, config: dict) -> None:
    """num_processes (accelerate's total over machines) and num_machines: positive integers, the total split
    evenly over the machines (accelerate would start num_processes / num_machines per machine, rounded down)."""
    counts = {key: config.get(key, 1) for key in ("num_processes", "num_machines")}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path}: {key} must be a positive integer, got {value!r}")
    if counts["num_processes"] % counts["num_machines"]:
        raise ConfigError(f"{path}: num_processes {counts['num_processes']} (the total over machines) is not a "
                          f"multiple of num_machines {counts['num_machines']}")


def check_accelerate_yaml(path: str) -> dict:
    """Load an accelerate launch YAML; unknown keys and a missing/bad DeepSpeed JSON raise ConfigError."""
    config = read_yaml(path, "accelerate config")
    top, ds_keys = accelerate_keys()
    for key in config:
        if key not in top:
            raise ConfigError(f"{path}: unknown accelerate key {key!r}{nearest(key, top)}")
    check_topology(path, config)
    ds = config.get("deepspeed_config") or {}
    for key in ds:
        if key not in ds_keys:
            raise ConfigError(f"{path}: deepspeed_config: unknown key {key!r}{nearest(key, ds_keys)}")
    if "deepspeed_config_file" in ds:
        check_deepspeed_json(deepspeed_file_of(path, ds["deepspeed_config_file"]))
    return config


def sft_deepspeed(path: str) -> str | None:
    """sft.py --deepspeed: a DeepSpeed JSON, or an accelerate YAML whose deepspeed_config_file is followed.
    Returns the checked JSON path for TrainingArguments(deepspeed=...); anything else is refused."""
    if not path:
        return None
    try:
        return _sft_deepspeed(path)
    except ConfigError as e:  # name the flag: the file alone does not say where it came from
        raise e if str(e).startswith("--deepspeed") else ConfigError(f"--deepspeed {e}") from None


def _sft_deepspeed(path: str) -> str:
    if Path(path).suffix in (".yaml", ".yml"):
        ds = check_accelerate_yaml(path).get("deepspeed_config") or {}
        if "deepspeed_config_file" not in ds:
            raise ConfigError(f"--deepspeed {path}: an accelerate YAML without deepspeed_config_file; give a DeepSpeed "
                              "JSON (config/sft_zero2.json, config/sft_zero3.json)")
        return deepspeed_file_of(path, ds["deepspeed_config_file"])
    if Path(path).suffix != ".json":
        raise ConfigError(f"--deepspeed {path}: expected a DeepSpeed .json or an accelerate .yaml")
    check_deepspeed_json(path)
    return path


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    try:
        for path in argv:
            (check_deepspeed_json if path.endswith(".json") else check_accelerate_yaml)(path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
