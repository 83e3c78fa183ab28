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


def apply_aliases(args_cls, flags: dict) -> dict:
    """`args_cls.FLAG_ALIASES` {old name: field, or None for a flag accepted and ignored} -> renamed flags."""
    flags = dict(flags)
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


def usage(args_cls) -> str:
    """--help text: the args dataclass's lines are the documentation; fields inherited from a dataclass base
    (and not redefined) come first, from the nearest base that defines them."""
    own = body_lines(args_cls)
    own_names = {line.split(":")[0] for line in own}
    inherited = {}
    for base in reversed(args_cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            inherited.update({line.split(":")[0]: line for line in body_lines(base) if not line.startswith("#")})
    lines = [inherited[f.name] for f in dataclasses.fields(args_cls) if f.name in inherited and f.name not in own_names]
    doc = (args_cls.__doc__ or "").strip()
    return f"usage: python {command()} --flag value ...\n{doc}\n\nflags (name: type = default  # meaning):\n  " + \
        "\n  ".join(lines + own)
