"""Recipes and precedence you can see: script defaults < recipe YAML < command line.

A recipe (recipes/*.yaml) holds one scenario's hyperparameters, one section per entry script:

    sft:      {batch_size: 1024, micro_batch_size: 16, ...}
    rl:       {learning_rate: 1.0e-5, beta: 1.0e-3, ...}
    evaluate: {num_beams: 50, ...}

`python rl.py --recipe R.yaml` reads the `rl:` section. Every key must be a field of the script's
args dataclass (an unknown key is a one-line error with the nearest valid key); values pass the
same type checks as flags; a renamed flag's old name (minionerec.run.flags.RENAMED_FLAGS) still works as a key,
with a warning. Every run prints each resolved value with its source and writes the
same to OUTPUT_DIR/run_config.yaml; `--dry_run true` prints it and writes nothing.

Nothing is kept between calls: a value's source is read back from the args themselves (their --recipe
and the dataclass defaults), so the same args always report the same sources.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from pathlib import Path

import yaml

from minionerec.run import preflight
from minionerec.run.atomic import atomic_write_text
from minionerec.run.flags import FlagError, check_removed, parse_args, rename_deprecated, rename_table

# recipe keys that are not a script's section: what it is, the real model (minionerec.model.shapes), the GPUs and the
# memory per GPU it is sized for (the rehearsal's memory arithmetic uses them and checks the fit)
META_KEYS = {"description", "base_model_shape", "gpu_memory_gb", "gpus"}
# sections a recipe may hold: one per script it configures (named by the script's file; tiny = minionerec.model.tiny)
SECTIONS = ("sft", "rl", "evaluate", "sasrec", "tiny")
# flags about the run itself, never read from a recipe
RUN_FLAGS = ("recipe", "dry_run")
# a recipe or launch YAML is a few KB; a bigger file is a data file named by mistake
MAX_YAML_BYTES = 1_000_000
# what torchrun / accelerate launch put in each process's environment (accelerate's from the launch YAML)
LAUNCH_ENV = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
              "MINIONEREC_LAUNCH_CONFIG", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
              "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
              "ACCELERATE_GRADIENT_CLIPPING", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
              "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE")



class ConfigError(FlagError):
    """A recipe is missing, malformed, or holds a key its script does not know."""


def nearest(name: str, valid) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str, what: str) -> dict:
    problem = preflight.file_problem(path)
    if problem == "file not found":
        raise ConfigError(f"{what} not found: {path}")
    if problem:
        raise ConfigError(f"{what} {path}: {problem}")
    size = Path(path).stat().st_size
    if size > MAX_YAML_BYTES:  # read whole and parsed: a data file named by mistake would take minutes
        raise ConfigError(f"{what} {path}: {size:,} bytes, too big for a {what} (at most {MAX_YAML_BYTES:,})")
    try:
        data = yaml.load(Path(path).read_text(), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]}{where})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def read_recipe(path: str) -> dict:
    """Recipe `path` as {section: values}, every section name checked."""
    data = read_yaml(path, "recipe")
    for key in data:
        if key not in SECTIONS and key not in META_KEYS:
            raise ConfigError(f"{path}: unknown section {key!r}{nearest(key, SECTIONS)}; sections: {', '.join(SECTIONS)}")
    return data


def recipe_section(path: str, section: str, valid_keys, args_cls=None, warn: bool = True) -> dict:
    """The `section` of recipe `path`, every key checked against `valid_keys` (and `args_cls`'s removed and renamed
    flags: an old name is renamed, with a warning line unless `warn` is false)."""
    data = read_recipe(path)
    if section not in data:
        raise ConfigError(f"{path}: no {section!r} section (it has: {', '.join(k for k in data if k in SECTIONS)})")
    values = data[section] or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: section {section!r} must be a mapping of key: value")
    valid = set(valid_keys) - set(RUN_FLAGS)
    if args_cls is not None:
        try:
            check_removed(args_cls, values)
        except FlagError as e:
            raise ConfigError(f"{path}: {section}: {str(e).lstrip('-')}") from None
    old_names = {old for old, new in rename_table(args_cls).items() if new in valid} if args_cls is not None else set()
    for key in values:
        if key not in valid and key not in old_names:
            raise ConfigError(f"{path}: {section}: unknown key {key!r}{nearest(key, valid)}")
    try:
        return rename_deprecated(args_cls, values, where=f"{path}: {section}: ", dashes="", warn=warn) if old_names \
            else values
    except FlagError as e:
        raise ConfigError(f"{path}: {section}: {e}") from None


def script_name(args_cls) -> str:
    """The recipe section of an args dataclass: its script's file name (sft, rl, evaluate)."""
    return Path(inspect.getfile(args_cls)).stem


def recipe_values(args_cls, recipe_path: str) -> dict:
    """The section of recipe `recipe_path` for `args_cls`'s script: keys checked against its fields, values
    type-checked as flags are (an error names the recipe)."""
    recipe = recipe_section(recipe_path, script_name(args_cls), [f.name for f in dataclasses.fields(args_cls)], args_cls)
    try:
        parse_args(args_cls, recipe)
    except FlagError as e:
        raise ConfigError(f"{recipe_path}: {str(e).lstrip('-')}") from None
    return recipe


def resolve_args(args_cls, flags: dict):
    """fire's flags (+ the recipe named by --recipe) -> args_cls: defaults < recipe < flags (sources_of reads each
    value's source back). Old flag names are renamed first, each with its warning line."""
    flags = rename_deprecated(args_cls, flags)
    recipe_path = str(flags.get("recipe") or "")
    recipe = recipe_values(args_cls, recipe_path) if recipe_path else {}
    return parse_args(args_cls, {**recipe, **flags})


def sources_of(args) -> dict[str, str]:
    """Field -> where its value came from: "recipe PATH" (the --recipe recipe sets it to this value), "default"
    (the dataclass's), else "command line" (a flag, or the Python caller that built the args)."""
    recipe_path = getattr(args, "recipe", "") or ""
    recipe = {}
    if recipe_path:  # read again, not remembered: the recipe's values as resolve_args typed them (warned there)
        keys = recipe_section(recipe_path, script_name(type(args)), [f.name for f in dataclasses.fields(args)],
                              type(args), warn=False)
        typed = parse_args(type(args), keys)
        recipe = {k: getattr(typed, k) for k in keys}
    out = {}
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name in recipe:
            out[f.name] = f"recipe {recipe_path}" if value == recipe[f.name] else "command line"
        else:
            out[f.name] = "default" if value == default else "command line"
    return out


def launch_values() -> dict[str, str]:
    """The launcher's part of the run: world sizes and ranks (torchrun / accelerate) and what
    accelerate took from the launch YAML (ACCELERATE_*)."""
    return {k: os.environ[k] for k in LAUNCH_ENV if k in os.environ}


def resolved(args) -> dict:
    """The run_config.yaml document: every field's value and source, plus the launch environment."""
    sources = sources_of(args)
    launch_source = lambda k: "launch YAML" if k.startswith(("ACCELERATE_", "MINIONEREC_")) else "launcher"  # noqa: E731
    return {
        "script": script_name(type(args)) + ".py",
        "precedence": "default < recipe < command line",
        "args": {f.name: {"value": getattr(args, f.name), "source": sources[f.name]} for f in dataclasses.fields(args)},
        "launch": {k: {"value": v, "source": launch_source(k)} for k, v in launch_values().items()},
    }


def format_resolved(doc: dict) -> str:
    width = max(len(k) for k in [*doc["args"], *doc["launch"]])
    lines = [f"[config] {doc['script']} resolved ({doc['precedence']}):"]
    for part in ("args", "launch"):
        for key, entry in doc[part].items():
            lines.append(f"  {key:<{width}}  {entry['value']!r:<24}  {entry['source']}")
    return "\n".join(lines)


def is_local_main() -> bool:
    """The first process of each node prints (so each node's world sizes can be read)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0


def record_run(args, output_dir: str | Path, flag: str = "output_dir") -> dict:
    """Call once every check has passed, before any weights load. Prints the resolved config (first
    process per node); writes output_dir/run_config.yaml (global rank 0) unless --dry_run."""
    preflight.writable_dir(str(output_dir), flag)
    doc = resolved(args)
    if is_local_main():
        print(format_resolved(doc), flush=True)
    if not getattr(args, "dry_run", False) and int(os.environ.get("RANK", 0)) == 0:
        atomic_write_text(Path(output_dir, "run_config.yaml"), yaml.safe_dump(doc, sort_keys=False, width=120))
    elif getattr(args, "dry_run", False) and is_local_main():
        cached = " but the prepared rows (--data_cache_dir)" if getattr(args, "data_cache_dir", "") else ""
        print(f"[config] dry run: flags, recipe, files, data rows, tokenizer, batch sizes and {flag} checked; "
              f"no weights loaded, nothing written{cached}", flush=True)
    return doc
