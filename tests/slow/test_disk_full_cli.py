"""Issue 37, the tester's own commands: sft.py and evaluate.py in a subprocess under `ulimit -f` (RLIMIT_FSIZE), the
final save or the predictions bigger than the limit: exit code 2, one `error:` line naming the path and the free space,
no traceback, the old outputs intact and no temporary left (in-process: tests/integration/test_disk_full.py)."""
import os
import resource
import shutil
import subprocess
import sys

import pytest

from conftest import CATEGORY, ROOT, split_path

pytestmark = pytest.mark.slow  # two real runs, ~10 s each


def run_under_limit(limit: int, *argv):
    """`ulimit -f` in the child only: Python ignores SIGXFSZ there too, so a write past the limit fails with EFBIG."""
    def lower_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=lower_limit)


def error_lines(result) -> list[str]:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_sft_final_save_under_ulimit(demo_data, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_model_dir, out / "final_checkpoint")
    before = {p.name: p.read_bytes() for p in (out / "final_checkpoint").iterdir()}
    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    result = run_under_limit(weights - 1, "sft.py", "--base_model", tiny_model_dir,
                             "--train_file", split_path(demo_data, "train"), "--output_dir", out,
                             "--sid_index_path", demo_data / "index" / f"{CATEGORY}.index.json",
                             "--item_meta_path", demo_data / "index" / f"{CATEGORY}.item.json",
                             "--sample", 8, "--batch_size", 8, "--micro_batch_size", 8, "--max_steps", 1)
    [line] = error_lines(result)
    assert line.startswith(f"error: writing {out / 'final_checkpoint'} failed: the disk is full (File too large; ")
    assert line.endswith("(ulimit -f)): old outputs are intact")
    assert {p.name: p.read_bytes() for p in (out / "final_checkpoint").iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["final_checkpoint", "run_config.yaml"]


def test_evaluate_write_under_ulimit(demo_data, tiny_model_dir, tmp_path):
    result_json = tmp_path / "pred.json"
    result_json.write_text('["previous"]')
    result = run_under_limit(4096, "evaluate.py", "--base_model", tiny_model_dir,
                             "--test_file", split_path(demo_data, "test"), "--result_json", result_json,
                             "--sid_index_path", demo_data / "index" / f"{CATEGORY}.index.json",
                             "--num_beams", 5, "--sample", 20)
    [line] = error_lines(result)
    assert line.startswith(f"error: writing {result_json} failed: the disk is full (File too large; ")
    assert result_json.read_text() == '["previous"]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json", "run_config.yaml"]
