"""Nothing half-written: every output a user keeps is written to a temporary sibling, then renamed.

`os.replace` within one directory is atomic on POSIX: a reader (or a crash) sees the old file or the
new one, never a mix. Each writer gets its own uniquely named temporary file, so two runs writing
the same path concurrently leave one complete result (the last rename wins), never an interleaving.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then restored
os.umask(_UMASK)


def settle(tmp) -> None:
    """Make a finished temporary sibling what a plain write would have made: a file's data on the disk before any
    name points at it, and the umask's mode (mkstemp makes 0600, mkdtemp 0700; under umask 022: 0644, 0755)."""
    tmp = Path(tmp)
    if tmp.is_dir():
        os.chmod(tmp, 0o777 & ~_UMASK)
        return
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling path of `path`; rename it onto `path` when the block succeeds.

    For writers that take a path (torch.save, np.save, DataFrame.to_csv). On an exception or a
    kill the target is untouched; on an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        settle(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """`Path(path).write_text(text)`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary sibling directory; it replaces `path` (see replace_dir) when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        settle(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src, dst) -> None:
    """Move directory `src` (written completely) to `dst`, replacing an existing `dst`.

    A directory cannot be renamed onto a non-empty one, so an existing `dst` is first renamed aside
    (`.NAME.old-*`, deleted after the swap). Another writer may swap in between: then the loop moves
    its result aside too, so `dst` always ends as one writer's complete directory.
    """
    src, dst = Path(src), Path(dst)
    set_aside = []
    while True:
        try:
            os.rename(src, dst)  # succeeds when dst is absent (or an empty directory)
            break
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        aside = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        set_aside.append(aside)
        with contextlib.suppress(FileNotFoundError):  # another writer moved it first
            os.rename(dst, aside / dst.name)
    for aside in set_aside:
        shutil.rmtree(aside, ignore_errors=True)
