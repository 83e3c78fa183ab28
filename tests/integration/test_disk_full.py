"""Issue 37: a write that finds no room (a full disk, a quota, `ulimit -f`) is one `error:` line naming the path and the
free space, exit code 2, with the old outputs intact and no temporary or partial checkpoint left.

The runs are real (sft.py and evaluate.py through cli.run, in-process) under a real file size limit: RLIMIT_FSIZE,
what `ulimit -f` sets, lowered just below the size of the write that must fail. Python ignores SIGXFSZ, so that write
fails with EFBIG (errno 27), as `ulimit -f` made the tester's runs fail; ENOSPC and EDQUOT take the same path
(tests/unit/test_atomic.py).
"""
import contextlib
import errno
import re
import resource
import shutil
import sys
from pathlib import Path

import pytest

import evaluate
import sft
from conftest import split_path
from minionerec.run import cli
from test_preflight import index_path, sft_flags


def disk_full(path, reason: str = "File too large") -> str:
    """The expected line, as a regex: `error: writing PATH failed: the disk is full (File too large; 79.2 GB free on
    /, file size limit 120.9 KB (ulimit -f)): old outputs are intact`."""
    return (rf"error: writing {re.escape(str(path))} failed: the disk is full \({re.escape(reason)}; [\d.]+ [KMG]?B "
            r"free on /\S*, file size limit [\d.]+ [KMG]?B \(ulimit -f\)\): old outputs are intact")


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE = nbytes for this process inside the block (no file may grow past it), then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def error_line(monkeypatch, capsys, module, limit: int, **flags) -> str:
    """Run `module` through cli.run under a file size limit; assert exit code 2, one error line, no traceback."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *(f"--{k}={v}" for k, v in flags.items())])
    with file_size_limit(limit), pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, module.Args)
    assert exit_info.value.code == cli.SETUP_EXIT_CODE
    err = capsys.readouterr().err  # also the model's progress bars and transformers' notes
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def tree(path: Path) -> dict:
    """relative path -> bytes of every file under `path` (hidden temporaries included)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def quick_sft(demo_data, model, out, **overrides) -> dict:
    # shrunk: 8 rows, one batch a step, one task
    return sft_flags(demo_data, model, out, sample=8, batch_size=8, micro_batch_size=8, max_steps=2, warmup_steps=0,
                     task_item_alignment="false", task_sid_history_title="false", **overrides)


def test_sft_final_save_on_a_full_disk(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(tiny_model_dir, out / "final_checkpoint")  # an earlier run's result
    before = tree(out / "final_checkpoint")
    weights = (tiny_model_dir / "model.safetensors").stat().st_size  # the final save writes as many bytes
    line = error_line(monkeypatch, capsys, sft, weights - 1, **quick_sft(demo_data, tiny_model_dir, out))
    assert re.fullmatch(disk_full(out / "final_checkpoint"), line), line
    assert tree(out / "final_checkpoint") == before
    assert sorted(p.name for p in out.iterdir()) == ["final_checkpoint", "run_config.yaml"]  # no temporary


def test_sft_checkpoint_save_on_a_full_disk(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The Trainer writes checkpoint-N itself, in place: the half-written one is removed (resume would skip it)."""
    out = tmp_path / "out"
    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    # the weights fit, the optimizer state (Adam: two moments, twice the weights) does not
    line = error_line(monkeypatch, capsys, sft, weights + weights // 2,
                      **quick_sft(demo_data, tiny_model_dir, out, save_steps=1))
    assert re.fullmatch(disk_full(out / "checkpoint-1", "torch.save wrote fewer bytes than it meant to"), line), line
    assert sorted(p.name for p in out.iterdir()) == ["run_config.yaml"]


def test_evaluate_write_on_a_full_disk(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    result_json = tmp_path / "pred.json"
    result_json.write_text('[{"previous": true}]')
    line = error_line(monkeypatch, capsys, evaluate, 4096, base_model=tiny_model_dir,
                      test_file=split_path(demo_data, "test"), sid_index_path=index_path(demo_data),
                      result_json=result_json, num_beams=5, sample=20)  # 20 rows: ~10 KB of predictions
    assert re.fullmatch(disk_full(result_json), line), line
    assert result_json.read_text() == '[{"previous": true}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json", "run_config.yaml"]


def test_any_other_write_after_checks_names_the_output_dir(tmp_path, monkeypatch, capsys):
    """A write outside the atomic writers (TRL's completions, a Trainer log) that finds no room: one line naming the
    output directory; any other error after the checks keeps its traceback."""
    from dataclasses import dataclass

    @dataclass
    class Args:
        error: str = "ENOSPC"

    def main(args):
        with cli.after_checks(tmp_path):
            raise OSError(getattr(errno, args.error), "from a writer")

    monkeypatch.setattr(sys, "argv", ["x.py", "--error", "ENOSPC"])
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, Args)
    assert exit_info.value.code == cli.SETUP_EXIT_CODE
    assert capsys.readouterr().err.startswith(f"error: writing {tmp_path} failed: the disk is full (No space left "
                                              "on device; ")
    monkeypatch.setattr(sys, "argv", ["x.py", "--error", "EIO"])
    with pytest.raises(OSError, match="from a writer"):
        cli.run(main, Args)


def test_the_ranking_curve_is_rewritten_whole_not_appended(tmp_path):
    """eval_during_training.jsonl on a full disk: the previous curve stays (an append left a torn last line, which the
    resume then failed to parse)."""
    from types import SimpleNamespace

    from minionerec.ranking.callback import ConstrainedEvalCallback
    from minionerec.run.atomic import DiskFullError

    curve = ConstrainedEvalCallback([], [], num_beams=5, every=1, batch_size=1)
    curve.trainer = SimpleNamespace(is_world_process_zero=lambda: True)
    args = SimpleNamespace(output_dir=str(tmp_path))
    curve.record(args, 1, {"eval_NDCG@5": 0.25})
    before = (tmp_path / "eval_during_training.jsonl").read_text()
    with file_size_limit(len(before) + 10), pytest.raises(DiskFullError):  # room for a few bytes more, not a line
        curve.record(args, 2, {"eval_NDCG@5": 0.5})
    assert (tmp_path / "eval_during_training.jsonl").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["eval_during_training.jsonl"]
