"""Nothing half-written: every output a user keeps is written to a temporary sibling, then renamed.

`os.replace` within one directory is atomic on POSIX: a reader (or a crash) sees the old file or the
new one, never a mix. Each writer gets its own uniquely named temporary file, so two runs writing
the same path concurrently leave one complete result (the last rename wins), never an interleaving.

Several outputs that belong together (an index, its item.json and a model) are `Staged`: each written to its
temporary sibling, then all renamed at once; a failed rename puts back the ones already renamed.

A write that finds no room (a full disk, a quota, a file size limit) removes its temporary and raises a
DiskFullError whose message names the target and the free space: minionerec.run.cli prints it as one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import tempfile
from pathlib import Path

# a write that found no room: the disk is full, the quota is spent, or a file grew past the size limit (EFBIG:
# `ulimit -f`, whose SIGXFSZ signal Python ignores, or the file system's largest file)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# safetensors raises its own SafetensorError (not an OSError) quoting the OS message; torch.save's zip writer only
# notices that fewer bytes reached the file than it wrote
TORCH_SHORT_WRITE = ("PytorchStreamWriter failed writing", "unexpected pos")


class DiskFullError(OSError):
    """A write found no room; the message is the one line to show (target, reason, free space)."""


def no_room_reason(error: BaseException) -> str | None:
    """Why `error`, or an error it was raised from, is a write that found no room (the OS's words), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_ROOM:
            return os.strerror(error.errno)
        if type(error).__name__ == "SafetensorError":
            words = [os.strerror(e) for e in NO_ROOM if os.strerror(e) in str(error)]
            if words:
                return words[0]
        if isinstance(error, RuntimeError) and any(t in str(error) for t in TORCH_SHORT_WRITE):
            return "torch.save wrote fewer bytes than it meant to"
        error = error.__cause__ or error.__context__
    return None


def disk_full_message(path, reason: str, intact: bool = True) -> str:
    """`writing PATH failed: the disk is full (REASON; 1.2 GB free on /mnt[, file size limit ...])[: old ...]`."""
    where = Path(path).absolute()
    while not where.exists():  # the free space of the directory the write went to
        where = where.parent
    mount = where.resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limit_part = "" if limit == resource.RLIM_INFINITY else f", file size limit {_size(limit)} (ulimit -f)"
    return (f"writing {path} failed: the disk is full ({reason}; {_size(shutil.disk_usage(where).free)} free on "
            f"{mount}{limit_part})" + (": old outputs are intact" if intact else ""))


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@contextlib.contextmanager
def naming_disk_full(path, intact: bool = True):
    """Inside the block, a write that finds no room becomes a DiskFullError naming `path`; `intact`: the
    message adds that the old outputs are intact (the writer cleaned up after itself)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        reason = no_room_reason(e)
        if reason is None:
            raise
        raise DiskFullError(disk_full_message(path, reason, intact)) from e

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
    with naming_disk_full(path):
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
    with naming_disk_full(path):
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


class Staged:
    """Several outputs, all or nothing: each written to a temporary sibling, then renamed onto their targets together
    (`commit`). Until the commit nothing a user sees changes; a failed commit puts back what it already renamed (a
    replaced file from its `.NAME.XXXXXXXX.bak` hard link), and `discard` removes every temporary file, directory,
    backup and directory it created. A staged directory never replaces one: its target must still be absent.

    `doing` names the work in the error of a target directory that appeared meanwhile; `rename(src, dst)` puts one
    output in place (os.replace; a caller's seam for tests that fail a rename on purpose)."""

    def __init__(self, doing: str = "writing", rename=os.replace):
        self.doing, self.rename = doing, rename
        self.outputs: list[tuple[Path, Path]] = []  # (temporary sibling, target)
        self.created: list[Path] = []  # parent directories made for the outputs, deepest last

    def parents(self, targets) -> None:
        """Create the targets' missing parent directories (removed again by `discard`)."""
        for target in map(Path, targets):
            missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
            for p in reversed(missing):
                p.mkdir()
                self.created.append(p)

    def file(self, target, text: str) -> None:
        target = Path(target)
        self.parents([target])
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        self.outputs.append((Path(tmp), target))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        settle(tmp)

    def directory(self, target) -> Path:
        target = Path(target)
        self.parents([target])
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        self.outputs.append((tmp, target))
        settle(tmp)
        return tmp

    def commit(self) -> None:
        done: list[tuple[Path, Path | None]] = []  # (target, backup of what it held before, or None)
        try:
            for tmp, target in self.outputs:
                backup = None
                if tmp.is_dir():
                    if target.exists():  # appeared since the checks: never replaced
                        raise FileExistsError(errno.EEXIST, f"appeared while {self.doing}; nothing was written",
                                              str(target))
                elif target.exists():  # kept (as a hard link) until every rename succeeded
                    backup = Path(tempfile.mktemp(prefix=f".{target.name}.", suffix=".bak", dir=target.parent))
                    try:
                        os.link(target, backup)
                    except OSError:  # no hard links on this filesystem
                        shutil.copy2(target, backup)
                try:
                    self.rename(tmp, target)
                except BaseException:
                    if backup is not None:
                        backup.unlink()
                    raise
                done.append((target, backup))
        except BaseException:
            for target, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, target)
                    elif target.is_dir():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
            self.discard()
            raise
        for _, backup in done:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()
        self.outputs, self.created = [], []

    def discard(self) -> None:
        for tmp, _ in self.outputs:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        for directory in reversed(self.created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self.outputs, self.created = [], []
