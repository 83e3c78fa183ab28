"""Paired comparison (minionerec/ranking/paired.py, compare.py): hand-computed differences and one-line errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from minionerec.data.formats import DataError
from minionerec.ranking.paired import check_same_rows, compare, format_over_seeds, over_seeds, paired_difference

ROOT = Path(__file__).resolve().parents[2]


def rows(preds, targets="abc"):
    return [{"item_sid": t, "history_item_sid": [t + "0"], "predict": p} for t, p in zip(targets, preds)]


# user a: rank 0 -> rank 1; user b: miss -> rank 0; user c: rank 2 in both
A = rows([["a", "x", "y"], ["x", "y", "z"], ["x", "y", "c"]])
B = rows([["x", "a", "y"], ["b", "x", "y"], ["x", "y", "c"]])


def test_ndcg_difference_by_hand():
    d = paired_difference(A, B, "NDCG", 3)
    diffs = [1 / math.log2(3) - 1.0, 1.0, 0.0]
    mean = sum(diffs) / 3
    assert d["mean"] == pytest.approx(mean)
    assert d["se"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2 / 3))
    assert d["a"] == pytest.approx((1.0 + 0.0 + 0.5) / 3) and d["b"] == pytest.approx((1 / math.log2(3) + 1.0 + 0.5) / 3)
    assert (d["better"], d["worse"], d["users"]) == (1, 1, 3)


def test_hit_rate_at_1_by_hand():
    d = compare(A, B, [1])["HR@1"]
    assert (d["a"], d["b"], d["mean"]) == pytest.approx((1 / 3, 1 / 3, 0.0))
    assert (d["better"], d["worse"]) == (1, 1)


def test_different_rows_are_refused():
    with pytest.raises(DataError, match="row 1: A and B score different users"):
        check_same_rows(A, rows([["a"], ["c"], ["b"]], targets="acb"))
    with pytest.raises(DataError, match="A has 3 rows, B 2"):
        check_same_rows(A, A[:2])


def test_rows_with_item_ids_pair_by_user_across_sid_indexes():
    """Two SID indexes of one dataset (bench --sids) give the same users different SIDs: item ids decide."""
    with_ids = [dict(r, item_id=i, history_item_id=[i + 10]) for i, r in enumerate(A)]
    reindexed = [dict(r, item_sid=r["item_sid"].upper(), history_item_sid=["Z"], item_id=str(r["item_id"]))
                 for r in with_ids]  # same users (ids as strings, as a JSON round trip may give), other SIDs
    check_same_rows(with_ids, reindexed)
    other_user = [dict(r) for r in reindexed]
    other_user[2]["history_item_id"] = [99]
    with pytest.raises(DataError, match="row 2: A and B score different users \\(target item 2 vs item 2\\)"):
        check_same_rows(with_ids, other_user)


def test_cli_table_and_one_line_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(A))
    (tmp_path / "b.json").write_text(json.dumps(B))
    ok = subprocess.run([sys.executable, "compare.py", "--a", str(tmp_path / "a.json"), "--b", str(tmp_path / "b.json"),
                         "--ks", "1+3", "--output_json", str(tmp_path / "d.json")], cwd=ROOT, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    assert "NDCG@3" in ok.stdout and "3 users" in ok.stdout
    assert set(json.loads((tmp_path / "d.json").read_text())) == {"HR@1", "HR@3", "NDCG@1", "NDCG@3"}
    bad = subprocess.run([sys.executable, "compare.py", "--a", str(tmp_path / "a.json"), "--b", str(tmp_path / "b.json"),
                          "--ks", "1+5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: --ks 1+5: each K must be in 1..3 (the shortest prediction list)"]


def test_over_seeds_hand_computed():
    per_seed = [{"mean": 0.010, "se": 0.003}, {"mean": 0.020, "se": 0.004}, {"mean": 0.030, "se": 0.000}]
    d = over_seeds(per_seed)
    assert d["mean"] == pytest.approx(0.020)
    assert d["se_seeds"] == pytest.approx(math.sqrt((0.01 ** 2 + 0 + 0.01 ** 2) / 2 / 3))  # sd 0.01 / sqrt(3)
    assert d["se_users"] == pytest.approx(0.005 / 3)  # sqrt(0.003^2 + 0.004^2) / 3
    assert d["exceeds_noise"] and d["positive_seeds"] == 3  # 0.020 > 2 x 0.0058, every seed positive


def test_over_seeds_needs_every_seed_to_agree():
    # a large mean carried by one seed while another disagrees in sign is not a finding
    assert not over_seeds([{"mean": 0.05, "se": 0.001}, {"mean": 0.05, "se": 0.001}, {"mean": -0.001, "se": 0.001}])["exceeds_noise"]
    assert not over_seeds([{"mean": 0.05, "se": 0.001}])["exceeds_noise"]  # one seed says nothing about run-to-run noise


def test_one_seed_verdict_names_the_only_noise_it_knows():
    assert format_over_seeds(over_seeds([{"mean": -0.0221, "se": 0.0025}])).endswith(
        "per seed -0.0221): one seed: beyond the per-user noise, the seed noise unknown")
    assert format_over_seeds(over_seeds([{"mean": 0.004, "se": 0.0025}])).endswith(
        "one seed: within the per-user noise, the seed noise unknown")
    assert format_over_seeds(over_seeds([{"mean": 0.05, "se": 0.001}, {"mean": 0.04, "se": 0.001}])).endswith(
        "exceeds the noise")
