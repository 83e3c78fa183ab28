"""The one entry path of every script: `python x.py [--recipe recipe.yaml] --flag value ...` -> main(args).

Flags and the recipe are resolved (minionerec.run.recipe), then main runs. Errors while flags, files and
data are checked print one `error: ...` line and exit with code 2; MINIONEREC_TRACEBACK=1 keeps the traceback.
So does a write that finds no room (minionerec.run.atomic.DiskFullError), at any point of a run.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

import fire
import yaml

from minionerec.run.atomic import DiskFullError, naming_disk_full
from minionerec.run.recipe import resolve_args
from minionerec.run.flags import usage

# Setup errors: raised while flags, files and data are checked. Each becomes one `error: ...` line and exit
# code 2 (DataError, CheckpointError, rq's CollisionError and json.JSONDecodeError are ValueErrors; a bad gzip
# is an OSError or EOFError). Raised inside `after_checks()` (model loading, training) they are bugs or runtime
# failures and keep their traceback, except a full disk (DiskFullError, an OSError): one line there too.
# MINIONEREC_TRACEBACK=1 prints the traceback of every error, then its line.
SETUP_ERRORS = (ValueError, OSError, EOFError, yaml.YAMLError)
SETUP_EXIT_CODE = 2


@contextlib.contextmanager
def after_checks(output=None):
    """Wrap what runs after every check has passed (model loading, training, saving): its errors keep their
    traceback (marked on the exception itself, so nothing is remembered between runs). A write that finds no room
    stays one line: the atomic writers name their target; any other (a Trainer's log, TRL's completions) names
    `output`, the run's output directory."""
    try:
        with naming_disk_full(output, intact=False) if output else contextlib.nullcontext():
            yield
    except DiskFullError:
        raise
    except SETUP_ERRORS as e:
        e.after_checks = True
        raise


def one_line(error: BaseException) -> str:
    """`error: <message>` on one line (YAML and OS errors span several)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message if message.startswith("error: ") else f"error: {message}"


def run(main, args_cls) -> None:
    """The fire shim of every entry script: `python x.py [--recipe recipe.yaml] --flag value ...` -> main(args)."""

    def entry(**flags):
        if flags.keys() & {"help", "h"}:
            print(usage(args_cls))
            return
        try:
            main(resolve_args(args_cls, flags))  # defaults < --recipe < flags
        except SystemExit as e:  # the checks' `raise SystemExit("error: ...")`
            if not isinstance(e.code, str):
                raise
            fail(e, e.code)
        except SETUP_ERRORS as e:
            if getattr(e, "after_checks", False):
                raise
            fail(e, e)

    entry.__doc__ = args_cls.__doc__
    fire.Fire(entry)


def fail(error: BaseException, message) -> None:
    """One line on stderr and exit code 2; the traceback first when MINIONEREC_TRACEBACK=1."""
    if os.environ.get("MINIONEREC_TRACEBACK") == "1":
        traceback.print_exception(error)
    print(one_line(message), file=sys.stderr)
    sys.exit(SETUP_EXIT_CODE)
