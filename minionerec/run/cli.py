"""Turn fire's keyword arguments into a typed args dataclass, failing loudly on bad flags.

fire passes `--flag=false` as the *string* "false" and silently accepts misspelt flags when the
target takes **kwargs; both would waste a GPU job, so both become one-line errors here.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import types
import typing

import fire
import yaml

_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


class FlagError(ValueError):
    """A command-line flag is unknown or has a value of the wrong type."""


# Setup errors: raised while flags, files and data are checked, i.e. before `end_of_setup()`. Each
# becomes one `error: ...` line and exit code 2 (DataError, CheckpointError, rq's CollisionError and
# json.JSONDecodeError are ValueErrors; a bad gzip is an OSError or EOFError). After end_of_setup()
# they are bugs or runtime failures and keep their traceback. MINIONEREC_TRACEBACK=1 always keeps it.
SETUP_ERRORS = (ValueError, OSError, EOFError, yaml.YAMLError)
SETUP_EXIT_CODE = 2
_setup = {"done": False}


def end_of_setup() -> None:
    """Called by an entry script just before it loads the model: later errors keep their traceback."""
    _setup["done"] = True


def one_line(error: BaseException) -> str:
    """`error: <message>` on one line (YAML and OS errors span several)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message if message.startswith("error: ") else f"error: {message}"


def as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise FlagError(f"--{name}: expected true/false, got {value!r}")


def _convert(value, kind, name: str):
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return _convert(value, options[0], name) if len(options) == 1 else value
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


def parse_args(args_cls, flags: dict):
    """Build `args_cls` from fire's flags; unknown flags and wrong types raise FlagError."""
    flags = apply_aliases(args_cls, flags)
    fields = {f.name: f for f in dataclasses.fields(args_cls)}
    unknown = sorted(set(flags) - set(fields))
    if unknown:
        raise FlagError(f"unknown flag(s): {', '.join('--' + u for u in unknown)} (see --help)")
    hints = typing.get_type_hints(args_cls)
    return args_cls(**{k: _convert(v, hints[k], k) for k, v in flags.items()})


def usage(args_cls) -> str:
    """--help text: the args dataclass's own lines (field, type, default, comment) are the documentation."""
    lines = inspect.getsource(args_cls).splitlines()
    fields = [line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith(('"""', "@", "class "))]
    doc = (args_cls.__doc__ or "").strip()
    return f"usage: python {sys.argv[0]} --flag value ...\n{doc}\n\nflags (name: type = default  # meaning):\n  " + \
        "\n  ".join(fields)


def run(main, args_cls) -> None:
    """The fire shim of every entry script: `python x.py [--config recipe.yaml] --flag value ...` -> main(args)."""

    def entry(**flags):
        if flags.keys() & {"help", "h"}:
            print(usage(args_cls))
            return
        from minionerec.run.config import resolve_args  # here: config imports this module

        _setup["done"] = False
        try:
            args = resolve_args(args_cls, flags)  # defaults < --config recipe < flags, sources recorded
            main(args)
        except SystemExit as e:  # the checks' `raise SystemExit("error: ...")`: one line, exit code 2
            if not isinstance(e.code, str):
                raise
            print(one_line(e.code), file=sys.stderr)
            sys.exit(SETUP_EXIT_CODE)
        except SETUP_ERRORS as e:
            if _setup["done"] or os.environ.get("MINIONEREC_TRACEBACK") == "1":
                raise
            print(one_line(e), file=sys.stderr)
            sys.exit(SETUP_EXIT_CODE)

    entry.__doc__ = args_cls.__doc__
    fire.Fire(entry)
