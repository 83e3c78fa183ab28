"""Atomic file writes: write a temporary sibling, then rename it into place.

A reader (a server reloading index.json, a user's next step) sees the old file or the new one,
never half of one; a crash leaves at most a hidden `.name.*` temporary behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_target(path, directory: bool = False):
    """Yield a temporary sibling path to write; on success it replaces `path` (a file, or a new directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)  # a directory target must not exist (or be empty): callers check first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> Path:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path, obj, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent))
