"""Nothing half-written: every output a user keeps is written to a temporary sibling, then renamed.

`os.replace` within one directory is atomic on POSIX: a reader (or a crash) sees the old file or the
new one, never a mix. Each writer gets its own uniquely named temporary file, so two runs writing
the same path concurrently leave one complete result (the last rename wins), never an interleaving.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then restored
os.umask(_UMASK)


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
        with open(tmp, "rb+") as f:  # the data reaches the disk before the name points at it
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a normal file is 0644 under umask 022
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


def replace_dir(src, dst) -> None:
    """Move directory `src` (written completely) to `dst`, replacing an existing `dst`.

    A directory cannot be renamed onto a non-empty one, so an existing `dst` is first renamed aside
    and deleted after the swap: a crash in between leaves the old one under `.NAME.old-*`."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / dst.name)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


