"""minionerec.run.file_lock: one writer at a time per file; the second is refused at once with the holder's name; a
killed holder blocks nothing; its temporaries are removed by the next writer, and only its own."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from minionerec.run.file_lock import LockHeld, lock_path, locked

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys; from minionerec.run.file_lock import locked\nwith locked(*sys.argv[1:]):\n" \
       "    print('held', flush=True); sys.stdin.read()"


def holder(*targets) -> subprocess.Popen:
    """Another process holding the locks of `targets` until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, targets)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    target = tmp_path / "X.index.json"
    with locked(target):
        assert lock_path(target) == tmp_path / ".X.index.json.lock" and lock_path(target).is_file()
        with pytest.raises(LockHeld) as refused:  # a second open file description: refused in one process too
            with locked(target):
                pass
    message = str(refused.value)
    assert message.startswith(f"{target} is being written by pid {os.getpid()} on {socket.gethostname()} since 20")
    assert " ".join(sys.argv) in message and "\n" not in message
    assert not lock_path(target).exists()  # removed on release
    with locked(target):  # and free again
        pass


def test_another_process_holds_it_until_it_ends_and_a_kill_blocks_nothing(tmp_path):
    target = tmp_path / "X.index.json"
    proc = holder(target)
    with pytest.raises(LockHeld, match=rf"is being written by pid {proc.pid} on .* since .*\(-c {target}\)"):
        with locked(target):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert lock_path(target).is_file()  # a killed holder leaves its file, but the kernel dropped its lock
    with locked(target):
        assert f'"pid": {os.getpid()}' in lock_path(target).read_text()


def test_all_or_none_of_several_targets(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    proc = holder(b)
    try:
        with pytest.raises(LockHeld, match="b.json is being written"):
            with locked(a, b):
                pass
        assert not lock_path(a).exists()  # a was given back
    finally:
        proc.communicate("")
    with locked(a, b):
        pass


def test_stale_temporaries_are_removed_under_the_lock_and_only_the_targets_own(tmp_path):
    """Named as run.atomic / minionerec.rq.add_items name them (tempfile, 8 random characters); another file's are kept."""
    target, model = tmp_path / "X.index.json", tmp_path / "model"
    proc = holder(target)  # a live writer (which has cleaned up on taking the lock) makes new temporaries
    own = [Path(tempfile.mkstemp(prefix=".X.index.json.", suffix=".tmp", dir=tmp_path)[1]),
           Path(tempfile.mkstemp(prefix=".X.index.json.", suffix=".bak", dir=tmp_path)[1]),
           Path(tempfile.mkdtemp(prefix=".model.", suffix=".tmp", dir=tmp_path))]
    (own[2] / "config.json").write_text("{}")  # a half-saved model directory
    others = [Path(tempfile.mkstemp(prefix=".X.index.json.v2.", suffix=".tmp", dir=tmp_path)[1]),  # X.index.json.v2's
              Path(tempfile.mkdtemp(prefix=".model.v2.", suffix=".tmp", dir=tmp_path)),
              Path(tempfile.mkstemp(prefix=".Y.json.", suffix=".tmp", dir=tmp_path)[1]),
              tmp_path / ".X.index.json.notes.tmp", tmp_path / "X.index.json"]
    for path in others[3:]:
        path.write_text("keep")
    with pytest.raises(LockHeld):  # the live writer may still be using them: nothing removed
        with locked(target, model):
            pass
    assert all(p.exists() for p in own + others)
    proc.communicate("")
    with locked(target, model):
        assert not any(p.exists() for p in own) and all(p.exists() for p in others)
