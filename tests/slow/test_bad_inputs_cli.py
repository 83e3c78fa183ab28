"""The real thing: a subprocess per script, exit code 2, one line, no traceback (sft.py, rl.py, evaluate.py: through
their launchers, test_launchers.py)."""
import os
import subprocess
import sys

import pytest

from conftest import CATEGORY, ROOT



@pytest.mark.parametrize("script, flags, expected", [
    (["convert_dataset.py"], ["--inter_dir", "RAW", "--category", CATEGORY, "--item_meta_path", "BADJSON",
                            "--sid_index_path", "BADJSON", "--output_dir", "OUT"],
     "error: BADJSON: invalid JSON (Expecting property name enclosed in double quotes at line 1)"),
    (["-m", "minionerec.rq.report"], ["--index_path", "BADJSON"],
     "error: BADJSON: invalid JSON (Expecting property name enclosed in double quotes at line 1)"),
])
def test_scripts_print_one_line_in_a_subprocess(script, flags, expected, demo_data, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{oops")
    subst = {"EMPTY": str(tmp_path / "empty"), "RAW": str(demo_data / "raw"), "BADJSON": str(tmp_path / "bad.json"),
             "OUT": str(tmp_path / "out")}
    flags = [subst.get(f, f) for f in flags]
    for key, value in subst.items():
        expected = expected.replace(key, value)
    result = subprocess.run([sys.executable, *script, *flags], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "out").exists()
