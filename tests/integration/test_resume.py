"""Nothing lost: resume after a kill anywhere in a checkpoint save, atomic outputs.

The slow tests SIGKILL real sft.py / rl.py processes (tests/fault_driver.py) at several points,
resume each time with `--resume_from_checkpoint true`, and require the final weights to equal an
uninterrupted run's bit for bit (CPU, one thread).
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate
from conftest import CATEGORY, ROOT, split_path
from minionerec.run.atomic import atomic_dir, atomic_path, atomic_write_text, replace_dir
from minionerec.run.resume import (CheckpointError, incomplete_reason, newest_complete, resolve_resume,
                                    whole_run_mean_loss)


# --- which checkpoint counts (fast)
def fake_checkpoint(out: Path, step: int, state=True, weights=True, torn=False) -> Path:
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if weights:
        (path / "model.safetensors").write_bytes(b"w")
    if state:
        text = json.dumps({"global_step": step, "log_history": []})
        (path / "trainer_state.json").write_text(text[:5] if torn else text)
    return path


def test_only_complete_checkpoints_count(tmp_path, capsys):
    fake_checkpoint(tmp_path, 1)
    fake_checkpoint(tmp_path, 10)  # numeric, not lexical, order: 10 is newer than 9 and 2
    fake_checkpoint(tmp_path, 11, state=False)
    fake_checkpoint(tmp_path, 12, torn=True)
    fake_checkpoint(tmp_path, 13, weights=False)
    (tmp_path / "checkpoint-14").mkdir()
    assert incomplete_reason(tmp_path / "checkpoint-10") is None
    path, skipped = newest_complete(tmp_path)
    assert path == tmp_path / "checkpoint-10"
    assert [(p.name, r) for p, r in skipped] == [
        ("checkpoint-14", "no trainer_state.json (the save was interrupted)"),
        ("checkpoint-13", "no model weights"),
        ("checkpoint-12", "trainer_state.json is truncated (the save was interrupted)"),
        ("checkpoint-11", "no trainer_state.json (the save was interrupted)")]
    assert resolve_resume("true", tmp_path) == str(tmp_path / "checkpoint-10")
    assert capsys.readouterr().err.count("warning: skipping incomplete checkpoint") == 4
    assert resolve_resume("", tmp_path) is None and resolve_resume("false", tmp_path) is None
    with pytest.raises(CheckpointError, match=r"checkpoint-12: trainer_state.json is truncated"):
        resolve_resume(str(tmp_path / "checkpoint-12"), tmp_path)
    # "true" with nothing complete: a fresh start, warned (issue 22: a restart loop must recover)
    assert resolve_resume("true", tmp_path / "fresh") is None
    assert "no complete checkpoint-N in" in capsys.readouterr().err


def test_whole_run_mean_loss_hand_computed():
    # logged every 2 steps: steps 1-2 mean 4.0, steps 3-4 mean 2.0; resumed at step 4, steps 5-6 mean 1.0
    history = [{"loss": 4.0, "step": 2}, {"loss": 2.0, "step": 4}, {"loss": 1.0, "step": 6}]
    assert whole_run_mean_loss(history, 1.0, first_step=4, last_step=6) == pytest.approx((8 + 4 + 2) / 6)
    assert whole_run_mean_loss(history, 3.5, first_step=0, last_step=6) == 3.5  # a fresh run: Transformers' own


# --- atomic outputs (fast)
def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "pred.json"
    atomic_write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of a write
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["pred.json"]
    for version in ("one", "two"):  # the second replaces an existing directory (final_checkpoint)
        (tmp_path / ".final.tmp").mkdir()
        (tmp_path / ".final.tmp" / "v").write_text(version)
        replace_dir(tmp_path / ".final.tmp", tmp_path / "final")
    assert (tmp_path / "final" / "v").read_text() == "two"
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "final") as tmp:  # a failed directory write
        (tmp / "v").write_text("half")
        raise RuntimeError
    with atomic_dir(tmp_path / "final") as tmp:
        (tmp / "v").write_text("three")
    assert (tmp_path / "final" / "v").read_text() == "three"
    assert oct((tmp_path / "final").stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "pred.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


WRITE_MANY = """
import sys
from minionerec.run.atomic import atomic_write_text
for _ in range(40):
    atomic_write_text(sys.argv[1], sys.argv[2] * 200_000)
"""


def test_concurrent_writers_never_mix(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "A" * 200_000)
    # two plain interpreters (the module is standard library only): start-up stays well under a second
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_MANY, str(target), letter], cwd=ROOT) for letter in "AB"]
    while any(w.poll() is None for w in writers):
        text = target.read_text()
        assert len(text) == 200_000 and len(set(text)) == 1  # one writer's whole file, never a mix
    assert [w.wait() for w in writers] == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


REPLACE_MANY = """
import sys
from pathlib import Path
from minionerec.run.atomic import atomic_dir
for _ in range(30):
    with atomic_dir(sys.argv[1]) as tmp:
        for name in ("config.json", "model.safetensors"):
            (tmp / name).write_text(sys.argv[2] * 1000)
"""


def test_concurrent_directory_writers_leave_one_complete_directory(tmp_path):
    """final_checkpoint's case: two processes replacing one directory (CPU torchrun ranks, two runs)."""
    target = tmp_path / "final_checkpoint"
    writers = [subprocess.Popen([sys.executable, "-c", REPLACE_MANY, str(target), letter], cwd=ROOT)
               for letter in "AB"]
    assert [w.wait() for w in writers] == [0, 0]
    texts = {p.name: p.read_text() for p in target.iterdir()}
    assert set(texts) == {"config.json", "model.safetensors"} and len(set(texts.values())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["final_checkpoint"]  # nothing set aside is left


KILL_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from minionerec.run.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp, open(tmp, "w") as f:
    f.write("[" + "1," * 100000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_during_a_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "pred.json"
    target.write_text('["previous"]')
    result = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(target)], cwd=ROOT)
    assert result.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == ["previous"]


def test_evaluate_interrupted_while_writing_keeps_the_previous_json(demo_data, tiny_model_dir, tmp_path, monkeypatch):
    result_json = tmp_path / "pred.json"
    result_json.write_text('[{"previous": true}]')
    real_write_text = Path.write_text

    def interrupted(self, data, *args, **kwargs):  # half the predictions reach the disk, then Ctrl-C
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate.main(evaluate.Args(base_model=str(tiny_model_dir), test_file=str(split_path(demo_data, "test")),
                                    sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"),
                                    result_json=str(result_json), num_beams=5, sample=4))
    monkeypatch.undo()
    assert json.loads(result_json.read_text()) == [{"previous": True}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json"]
