"""Find stale torch-extension build locks before a DeepSpeed launch (standard library only).

    python -m minionerec.run.ds_lock            # what rl.sh runs before `accelerate launch`; exit 2 on a stale lock

DeepSpeed JIT-builds ops (on CPU its `deepspeed_shm_comm` communication op) with
`torch.utils.cpp_extension.load`, which takes a `FileBaton`: it creates `<build dir>/lock`, builds, and deletes
the file. A process killed while it holds the baton leaves the file behind, and every later load of that op
waits for the file to disappear, forever and without a word. The build directory is torch's
`_get_build_directory(name)`: `$TORCH_EXTENSIONS_DIR/<op>` when that variable is set, otherwise
`<$XDG_CACHE_HOME or ~/.cache>/torch_extensions/<py tag>_<cpu|cuXXX|rocmXXX>/<op>`.

A lock is stale when it is older than `GRACE_S` seconds (the baton is held for a moment even when nothing needs
rebuilding) and no live process works in its build directory (torch runs ninja, and ninja the compiler, with
that directory as the working directory, so a build in progress always has one there). Without /proc (not
Linux) the processes cannot be seen, and a lock counts as stale when older than `NO_PROC_MAX_AGE_S`.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

GRACE_S = 60.0  # a younger lock may belong to a load that is about to start ninja (or has just finished)
NO_PROC_MAX_AGE_S = 3600.0  # without /proc: a build holding the lock this long is taken as interrupted


def extension_roots(environ=os.environ) -> list[tuple[Path, str]]:
    """(root, glob of lock files under it), as torch names the build directories."""
    if environ.get("TORCH_EXTENSIONS_DIR"):
        return [(Path(environ["TORCH_EXTENSIONS_DIR"]), "*/lock")]
    cache = environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return [(Path(cache) / "torch_extensions", "*/*/lock")]  # every <py tag>_<device> folder


def lock_files(environ=os.environ) -> list[Path]:
    return sorted(p for root, pattern in extension_roots(environ) if root.is_dir() for p in root.glob(pattern))


def busy_dirs(proc: Path = Path("/proc")) -> set[Path] | None:
    """The working directories of the live processes we can see; None without /proc."""
    if not (proc / "self" / "cwd").exists():
        return None
    dirs = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            dirs.add(Path(os.readlink(entry / "cwd")))
        except OSError:  # gone meanwhile, or another user's process
            continue
    return dirs


def stale_locks(environ=os.environ, now: float | None = None, grace_s: float = GRACE_S) -> list[Path]:
    """The lock files left by interrupted builds (see the module docstring for the rule)."""
    now = time.time() if now is None else now
    locks = lock_files(environ)
    if not locks:
        return []
    busy = busy_dirs()
    stale = []
    for lock in locks:
        try:
            age = now - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            continue
        build_dir = Path(os.path.realpath(lock.parent))
        if busy is None:
            if age > NO_PROC_MAX_AGE_S:
                stale.append(lock)
        elif age > grace_s and not any(d == build_dir or build_dir in d.parents for d in busy):
            stale.append(lock)
    return stale


def message(stale: list[Path]) -> str:
    if len(stale) == 1:
        return (f"error: stale DeepSpeed JIT lock {stale[0]} (from an interrupted build): delete it and rerun "
                "(a DeepSpeed launch would wait for it forever)")
    return (f"error: stale DeepSpeed JIT locks {', '.join(map(str, stale))} (from interrupted builds): delete them "
            "and rerun (a DeepSpeed launch would wait for them forever)")


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv:
        print(f"error: python -m minionerec.run.ds_lock takes no arguments (got {' '.join(argv)}); "
              "see --help", file=sys.stderr)
        return 2
    stale = stale_locks()
    if stale:
        print(message(stale), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
