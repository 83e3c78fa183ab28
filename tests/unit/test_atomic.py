"""minionerec.run.atomic: a failed write leaves the old file (or nothing) and no temporary behind; a full disk is
one error naming the target and the free space; staged outputs appear together or not at all."""
import errno
import os
import re
from pathlib import Path

import pytest

from minionerec.run.atomic import DiskFullError, Staged, atomic_dir, atomic_path, atomic_write_text, no_room_reason


def test_file_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "sub" / "index.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["index.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and len(list(target.parent.iterdir())) == 1


def test_directory_appears_only_on_success(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("save failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (tmp_path / "model" / "config.json").is_file()


class SafetensorError(Exception):
    """What safetensors raises (its own class, not an OSError), matched by name."""


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded"),
    (OSError(errno.EFBIG, "File too large"), "File too large"),  # `ulimit -f`: Python ignores SIGXFSZ
    (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"), "File too large"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 204416 vs 204304"),  # torch.save
     "torch.save wrote fewer bytes than it meant to"),
])
def test_a_full_disk_is_one_line_naming_the_target_and_the_free_space(error, reason, tmp_path):
    target = tmp_path / "pred.json"
    atomic_write_text(target, "old")
    with pytest.raises(DiskFullError) as e, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise error
    message = str(e.value)
    assert re.fullmatch(rf"writing {target} failed: the disk is full \({re.escape(reason)}; [\d.]+ [KMG]?B free on "
                        r"/\S*(, file size limit .*)?\): old outputs are intact", message), message
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["pred.json"]
    with pytest.raises(DiskFullError, match=rf"^writing {tmp_path / 'model'} failed: the disk is full"):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
            raise error
    assert [p.name for p in tmp_path.iterdir()] == ["pred.json"]


def test_other_errors_are_not_a_full_disk(tmp_path):
    assert no_room_reason(ValueError("File too large")) is None  # only safetensors' own error is read as text
    assert no_room_reason(OSError(errno.EACCES, "Permission denied")) is None
    try:  # a library's own error raised from the OS's
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("save failed") from cause
    except RuntimeError as wrapped:
        assert no_room_reason(wrapped) == "No space left on device"
    with pytest.raises(PermissionError), atomic_path(tmp_path / "x") as tmp:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    """The second rename fails: the first output is put back byte for byte, and nothing staged is left behind."""
    (tmp_path / "a.json").write_text("old a")

    def failing(src, dst):
        if Path(dst).name == "b.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        os.replace(src, dst)

    staged = Staged("testing", failing)
    staged.file(tmp_path / "a.json", "new a")
    staged.file(tmp_path / "sub" / "b.json", "new b")
    with pytest.raises(OSError, match="No space left"):
        staged.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and (tmp_path / "a.json").read_text() == "old a"
    staged = Staged()
    staged.file(tmp_path / "a.json", "new a")
    (staged.directory(tmp_path / "model") / "config.json").write_text("{}")
    staged.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "model"]
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "model" / "config.json").is_file()
