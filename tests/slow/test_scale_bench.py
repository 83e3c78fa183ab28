"""python -m bench.scale at two tiny sizes with its fastest stages (no torch stage): a row per stage, numbers in every
cell, the growth column, the JSON twin, and a second run reusing the generated datasets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scale import STAGES, growth_per_10x, parse_sizes

ROOT = Path(__file__).resolve().parents[2]
STAGE_LIST = ["generate", "tfidf", "rqkmeans", "convert", "add_items"]  # seconds each; tiny/sft/rl/serve are not


def run_bench(out: Path, data_root: Path, stages: list[str], *extra: str) -> subprocess.CompletedProcess:
    # 200 and 500 items, 2k and 5k rows: the smallest catalogues sid_shape gives 3x16 and one 2.5x step in rows
    cmd = [sys.executable, "-m", "bench.scale", "--sizes", "200:2000,500:5000", "--stages", ",".join(stages),
           "--out", str(out), "--data_root", str(data_root), "--threads", "1", "--new_items", "20", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def table_rows(markdown: str) -> list[list[str]]:
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


@pytest.mark.slow
def test_scale_bench_two_sizes(tmp_path):
    out, data_root = tmp_path / "scale", tmp_path / "data"
    proc = run_bench(out, data_root, STAGE_LIST)
    # each stage printed its command before it ran
    assert "$ " in proc.stdout and "minionerec.rq.rqkmeans --embedding_path" in proc.stdout
    head, *rows = table_rows((out / "scale.md").read_text())
    assert head == ["stage", "200:2k s", "200:2k GiB", "500:5k s", "500:5k GiB", "growth per 10x rows"]
    assert len(rows) == len(STAGE_LIST)  # one row per stage asked for (each of these fills one row)
    starred = 0
    for row in rows:
        seconds, gib = [float(c.removesuffix(" *")) for c in row[1:5:2]], [float(c) for c in row[2:5:2]]
        assert all(s > 0 for s in seconds) and all(g > 0 for g in gib), row
        assert row[-1].startswith("x") and float(row[-1][1:]) > 0, row
        starred += sum(c.endswith(" *") for c in row[1:5:2])
    assert starred == 2  # one bottleneck per size

    report = json.loads((out / "scale.json").read_text())
    assert [r["row"] for r in report["rows"]] == [key for s in STAGE_LIST for key, _ in STAGES[s]]
    for r in report["rows"]:
        assert all(v["status"] == "ok" and v["command"] for v in r["sizes"].values()), r
        assert len(r["growth_per_10x"]) == 1 and r["growth_per_10x"][0] > 0
    assert set(report["bottleneck"]) == {"200:2k", "500:5k"} and "generate" not in report["bottleneck"].values()

    # a second run reuses the generated datasets (keyed by size and seed): generate's row says so
    proc = run_bench(tmp_path / "again", data_root, ["generate", "convert"])
    assert "minionerec.prep.make_scale_data --output_dir" not in proc.stdout
    again = json.loads((tmp_path / "again" / "scale.json").read_text())
    assert again["rows"][0]["sizes"] == report["rows"][0]["sizes"]
    assert "reused" in again["notes"]["200:2k"]["generate"]

    # a stage that fails (here: killed by the stage timeout) is a table cell, and the bench goes on to the next
    run_bench(tmp_path / "failing", data_root, ["convert", "tfidf"], "--stage_timeout", "0.2")
    head, *rows = table_rows((tmp_path / "failing" / "scale.md").read_text())
    assert [row[1] for row in rows] == ["failed: timed out after 0.2 s"] * 2 and rows[0][-1] == "-"


def test_growth_and_sizes():
    assert growth_per_10x(1.0, 10.0, 1000, 10_000) == pytest.approx(10.0)  # linear
    assert growth_per_10x(1.0, 100.0, 1000, 100_000) == pytest.approx(10.0)  # linear over two decades
    assert growth_per_10x(2.0, 2.0, 10, 1000) == pytest.approx(1.0)  # flat
    assert growth_per_10x(None, 2.0, 10, 100) is None and growth_per_10x(1.0, 2.0, 10, 10) is None
    assert [(s.items, s.rows, s.key) for s in parse_sizes("1k:10k,100000:1M")] == [
        (1000, 10_000, "1k:10k"), (100_000, 1_000_000, "100k:1M")]
