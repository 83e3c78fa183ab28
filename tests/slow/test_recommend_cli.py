"""recommend.py through its real command line (a subprocess each): histories as typed text, one-line errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT



@pytest.mark.parametrize("value", ["0x1A", "1_2"])
def test_cli_keeps_history_ids_verbatim(paths, value):
    """fire reads 0x1A as 26 and 1_2 as 12, both catalogue items; as typed they are ids the catalogue lacks."""
    cmd = [sys.executable, str(ROOT / "recommend.py"), *[f"--{k}={v}" for k, v in paths.items()],
           "--history", value, "--k", "2", "--num_beams", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: history 0[0]: unknown item '{value}'")


def test_cli_parses_histories_from_flags(paths):
    """"1,2" reaches main as text (recommend.verbatim_flags); ',' separates items. One subprocess, tiny model (~6 s)."""
    cmd = [sys.executable, str(ROOT / "recommend.py"), *[f"--{k}={v}" for k, v in paths.items()],
           "--history", "1,2", "--k", "2", "--num_beams", "4", "--output_format", "jsonl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["history"] for r in rows] == [["1", "2"]] and len(rows[0]["recommendations"]) == 2
    assert all(math.isfinite(r["score"]) for r in rows[0]["recommendations"])
    bad = subprocess.run([*cmd[:-6], "--history", "1", "--k", "0"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: --k")
