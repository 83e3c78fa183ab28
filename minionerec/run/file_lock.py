"""One writer at a time for files that several runs may replace: an exclusive `fcntl.flock` on `.NAME.lock` beside
each file (standard library only).

    with locked(index_path):        # LockHeld (an OSError: one `error:` line, exit 2) while another run holds it
        old = read(index_path); ...; atomic_write_text(index_path, new)

Held from reading the old contents to the last rename, so two runs extending one file cannot both start from the
same old version (a lost update): the second is refused at once, told who holds the lock (pid, host, command and
since when: the holder writes them into the lock file). A second run does not wait: the first may take minutes,
and a refused run changed nothing, so it can simply be rerun.

The kernel drops a flock when its process dies, so a killed writer never blocks the next run. Its temporary
siblings would stay forever, though; once a run holds a file's lock no live writer can be using them, so it removes
them (`.NAME.XXXXXXXX.tmp`, minionerec.run.atomic's naming, and its Staged `.NAME.XXXXXXXX.bak`
backups; nothing else). The lock file is removed on release, while still locked: a run that opened it just before
notices that the path no longer names the file it locked and starts over on a fresh one.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

HOLDER_BYTES = 4096  # a lock file holds one short JSON line; never read more than this


class LockHeld(OSError):
    """Another live process holds the lock; the message names it."""


def lock_path(target) -> Path:
    """X -> .X.lock beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def stale_pattern(target) -> re.Pattern:
    """`.NAME.` + tempfile's 8 random characters + `.tmp` or `.bak`: only this file's own temporaries, never another
    file's (`.NAME.v2.XXXXXXXX.tmp` belongs to NAME.v2)."""
    return re.compile(rf"\.{re.escape(Path(target).name)}\.[a-z0-9_]{{8}}\.(tmp|bak)")


def holder_record() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                       "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})


def describe_holder(text: str) -> str:
    """A lock file's record -> 'pid 12 on host since 2026-12-08T10:00:00+00:00 (python -m minionerec.rq.add_items ...)'."""
    try:
        record = json.loads(text)
        command = " ".join(str(record["command"]).split())  # one line, whatever the arguments held
        return f"pid {record['pid']} on {record['host']} since {record['since']} ({command})"
    except (ValueError, KeyError, TypeError):  # taken a moment ago: the record is not written yet
        return "another process (which has not recorded its name yet)"


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def acquire(target, wait: bool = False) -> int:
    """Lock `target` (its parent directory must exist); returns the lock file's descriptor for `release`. With
    `wait`, a held lock is waited for (one line on stderr names the holder) instead of refused."""
    path = lock_path(target)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.read(fd, HOLDER_BYTES).decode("utf-8", "replace"))
            if not wait:
                os.close(fd)
                raise LockHeld(f"{target} is being written by {holder}; rerun when it has finished "
                               f"(lock {path})") from None
            print(f"waiting for {holder} to finish writing {target}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed this file as it released it: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder_record().encode(), 0)
    return fd


def release(target, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(target))  # still locked here, see the module docstring
    os.close(fd)


def remove_stale_temporaries(target) -> list[Path]:
    """Delete `target`'s temporary siblings left by killed writers; only while holding its lock."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = stale_pattern(target)
    stale = sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return stale


def _normal(target) -> Path:
    """The parent resolved, the name kept: `a/../X` and `X` share a lock, and the lock sits where run.atomic puts
    the temporaries (beside a symlink, not its target)."""
    target = Path(target)
    return target.parent.resolve() / target.name


@contextlib.contextmanager
def locked(*targets, wait: bool = False):
    """Hold the locks of every target (taken in sorted order, all or none; parents must exist), then remove each
    target's stale temporaries. `wait`: wait for a held lock instead of raising LockHeld."""
    paths = sorted({_normal(t) for t in targets})
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.callback(release, path, acquire(path, wait))
        for path in paths:
            remove_stale_temporaries(path)
        yield
