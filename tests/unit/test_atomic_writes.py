"""minionerec.run.atomic: a failed write leaves the old file (or nothing) and no temporary behind."""
import pytest

from minionerec.run.atomic import atomic_dir, atomic_path, atomic_write_text


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
