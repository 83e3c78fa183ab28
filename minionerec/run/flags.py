"""Command-line flags -> a typed args dataclass, failing loudly on bad flags; --help from the dataclass.

fire passes `--flag=false` as the *string* "false" and silently accepts misspelt flags when the
target takes **kwargs; both would waste a GPU job, so both become one-line errors (FlagError).
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing

from minionerec.run.args import RecipeArgs

_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


class FlagError(ValueError):
    """A command-line flag is unknown or has a value of the wrong type."""


def as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise FlagError(f"--{name}: expected true/false, got {value!r}")


def _convert(value, kind, name: str):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        return _convert(value, options[0], name) if len(options) == 1 else value
    if value is None:  # e.g. a recipe's `batch_size:` with no value
        raise FlagError(f"--{name}: expected {getattr(kind, '__name__', kind)}, got an empty value")
    if isinstance(value, (list, dict)):  # e.g. a recipe's `category: [A, B]`, which str() would keep as "['A', 'B']"
        raise FlagError(f"--{name}: expected one {getattr(kind, '__name__', kind)}, got a {type(value).__name__} {value!r}")
    if kind is bool:
        return as_bool(value, name)
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise FlagError(f"--{name}: expected {kind.__name__}, got {value!r}")
        try:
            number = kind(value) if kind is float or isinstance(value, int) else int(str(value), 10)
        except ValueError:
            raise FlagError(f"--{name}: expected {kind.__name__}, got {value!r}") from None
        return number
    if kind is str:
        if isinstance(value, tuple):  # fire reads `--lora_target_modules q_proj,v_proj` as ('q_proj', 'v_proj')
            return ",".join(map(str, value))
        return value if isinstance(value, str) else str(value)
    return value


# The alias table: flags (and recipe keys) renamed to say what they mean, old name -> new name. A pipeline script
# whose args have the new field and no field of the old name (rename_table) still takes the old name, on the
# command line and in a recipe, with a one-line warning on stderr; giving both is an error. All but config are
# upstream's flags (AkaliKong/MiniOneRec's sft.py / rl.py), so upstream's commands keep working.
RENAMED_FLAGS = {
    "config": "recipe",  # the recipe YAML (recipes/); config/ holds the launch YAMLs
    "test_during_training": "rank_eval_on_valid",  # the ranking evaluation runs on --eval_file, the valid split
    "eval_step": "rank_eval_every",  # its interval, not sft.py's eval-loss interval --eval_steps
    "test_beam": "rank_eval_beams",
    "ada_path": "item_embeddings_path",  # the semantic reward's .npy (upstream's were OpenAI ada embeddings)
    "cf_path": "sasrec_path",  # the sasrec reward's checkpoint (sasrec.py's output)
    "freeze_LLM": "train_only_new_tokens",  # only the new SID tokens' embedding / LM-head rows train
}


def rename_table(args_cls) -> dict[str, str]:
    """The RENAMED_FLAGS entries `args_cls` takes: a pipeline script's args (sft.py, rl.py, evaluate.py: they inherit
    minionerec.run.args.RecipeArgs) with the new name and no field of the old one."""
    if not (isinstance(args_cls, type) and issubclass(args_cls, RecipeArgs)):
        return {}
    fields = {f.name for f in dataclasses.fields(args_cls)}
    return {old: new for old, new in RENAMED_FLAGS.items() if new in fields and old not in fields}


def rename_deprecated(args_cls, flags: dict, where: str = "", dashes: str = "--", warn: bool = True) -> dict:
    """`flags` with each RENAMED_FLAGS old name that `args_cls` takes renamed, one `warning: ... is deprecated` line
    on stderr each (`where` starts it: a recipe's path and section); an old name beside its new one: FlagError."""
    flags = dict(flags)
    for old, new in rename_table(args_cls).items():
        if old not in flags:
            continue
        if new in flags:
            raise FlagError(f"{dashes}{old} is the old name of {dashes}{new}; give only {dashes}{new}")
        flags[new] = flags.pop(old)
        if warn:
            print(f"warning: {where}{dashes}{old} is deprecated; use {dashes}{new}", file=sys.stderr)
    return flags


def apply_aliases(args_cls, flags: dict) -> dict:
    """Renamed flags (RENAMED_FLAGS, with a warning) and `args_cls.FLAG_ALIASES` {upstream's name: field, or None
    for a flag accepted and ignored}, silent -> the fields' names."""
    flags = rename_deprecated(args_cls, flags)
    for old, new in getattr(args_cls, "FLAG_ALIASES", {}).items():
        if old not in flags:
            continue
        value = flags.pop(old)
        if new is None:
            print(f"note: --{old} is accepted for compatibility and has no effect", file=sys.stderr)
        elif new in flags:
            raise FlagError(f"--{old} is another name for --{new}; give only one of them")
        else:
            flags[new] = value
    return flags


def check_removed(args_cls, names) -> None:
    """`args_cls.REMOVED_FLAGS` {name: what to write instead}: a flag (or recipe key) whose meaning changed is an
    error that says how to translate it, never silently reinterpreted."""
    for name in names:
        if name in getattr(args_cls, "REMOVED_FLAGS", {}):
            raise FlagError(f"--{name} {args_cls.REMOVED_FLAGS[name]}")


def parse_args(args_cls, flags: dict):
    """Build `args_cls` from fire's flags; unknown flags and wrong types raise FlagError."""
    flags = apply_aliases(args_cls, flags)
    check_removed(args_cls, flags)
    fields = {f.name: f for f in dataclasses.fields(args_cls)}
    unknown = sorted(set(flags) - set(fields))
    if unknown:
        raise FlagError(f"unknown flag(s): {', '.join('--' + u for u in unknown)} (see --help)")
    hints = typing.get_type_hints(args_cls)
    return args_cls(**{k: _convert(v, hints[k], k) for k, v in flags.items()})


def body_lines(cls) -> list[str]:
    """A dataclass's own source lines below its header and docstring: fields (name: type = default  # meaning)
    and section comments."""
    body = inspect.getsource(cls).split(":", 1)[1]  # below `class Args(...):`
    body = body.split('"""', 2)[2] if body.lstrip().startswith('"""') else body  # below the docstring, whole
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("@")]


def command() -> str:
    """How this process was started, as the user typed it: `sft.py`, or `-m bench.quality` for a module run with
    -m (whose sys.argv[0] is the path of its file, .../bench/quality/__main__.py)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"-m {spec.name.removesuffix('.__main__')}" if spec is not None and spec.name else sys.argv[0]


def field_owner(args_cls, name: str):
    """The class of args_cls's MRO that (re)defines field `name` last (its line documents the field), or None."""
    return next((c for c in args_cls.__mro__ if name in vars(c).get("__annotations__", {})), None)


def usage(args_cls) -> str:
    """--help text: the args dataclass's lines are the documentation. Fields inherited from dataclass bases (and not
    redefined) come first, one group per base in the order the class names them (minionerec.run.args): the base's
    docstring as a `# ---` heading, then its lines; the class's own lines follow."""
    groups = []
    for base in args_cls.__mro__[1:]:
        if not dataclasses.is_dataclass(base):
            continue
        lines = [line for line in body_lines(base)
                 if line.startswith("#") or field_owner(args_cls, line.split(":")[0]) is base]
        if any(not line.startswith("#") for line in lines):
            doc = base.__doc__ or ""  # dataclass writes a signature where the class has no docstring
            heading = " ".join(doc.split()) if doc and not doc.startswith(f"{base.__name__}(") else base.__name__
            groups += [f"# --- {heading}", *lines]
    own = (["# --- this script's own flags"] if groups else []) + body_lines(args_cls)
    renamed = [f"# --{old} -> --{new}" for old, new in rename_table(args_cls).items()]
    if renamed:
        renamed.insert(0, "# --- renamed flags: the old name still works, on the command line and in a recipe, with "
                          "a warning")
    doc = (args_cls.__doc__ or "").strip()
    return f"usage: python {command()} --flag value ...\n{doc}\n\nflags (name: type = default  # meaning):\n  " + \
        "\n  ".join(groups + own + renamed)
