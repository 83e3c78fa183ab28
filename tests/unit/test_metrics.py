"""HR@K / NDCG@K against values worked out by hand."""
from __future__ import annotations

import math

import pytest

from minionerec.ranking.metrics import compute_metrics, count_invalid_and_duplicates, format_table, ks_for, ndcg_at


def test_ndcg_uses_log2_rank_plus_2():
    assert ndcg_at(0, 1) == 1.0
    assert ndcg_at(1, 3) == pytest.approx(1 / math.log2(3))  # 0.6309
    assert ndcg_at(3, 5) == pytest.approx(1 / math.log2(5))  # 0.4307
    assert ndcg_at(3, 3) == 0.0 and ndcg_at(None, 50) == 0.0


def test_compute_metrics_by_hand():
    predictions = [
        ["A", "B", "C", "D"],  # target A at rank 0
        ["B", "C", "A", "D"],  # target A at rank 2
        ["B", "C", "D", "E"],  # target A absent
        ["D", "A", "B", "C"],  # target A at rank 1
    ]
    m = compute_metrics(predictions, ["A"] * 4, ks=[1, 3])
    assert m["users"] == 4
    assert m["HR@1"] == 0.25  # one user hit at rank 0
    assert m["HR@3"] == 0.75  # ranks 0, 2, 1
    assert m["NDCG@1"] == 0.25
    # (1 + 1/log2(4) + 0 + 1/log2(3)) / 4 = (1 + 0.5 + 0.63093) / 4
    assert m["NDCG@3"] == pytest.approx((1 + 0.5 + 0.6309297535714575) / 4)


def test_counts_invalid_and_duplicate_predictions():
    catalogue = {"<a_1>", "<a_2>", "<a_3>"}
    preds = [["<a_1>", "<a_2>", "<a_1>"], ["<a_9>", "<a_3>", "bogus", "<a_3>"]]
    assert count_invalid_and_duplicates(preds, catalogue) == (2, 2)
    m = compute_metrics(preds, ["<a_1>", "<a_3>"], ks=[1, 3], catalogue=catalogue)
    assert (m["invalid"], m["duplicate"]) == (2, 2)
    assert m["HR@1"] == 0.5 and m["HR@3"] == 1.0


def test_ks_and_table():
    assert ks_for(50) == [1, 3, 5, 10, 20, 50]
    assert ks_for(10) == [1, 3, 5, 10]
    m = compute_metrics([["x"]], ["x"], ks=[1], catalogue={"x"})
    table = format_table({"ours": m}, [1])
    assert table.splitlines()[0].split() == ["method", "users", "HR@1", "NDCG@1", "invalid", "duplicate"]
    assert table.splitlines()[1].split() == ["ours", "1", "1.0000", "1.0000", "0", "0"]


def test_mismatched_lengths_fail():
    with pytest.raises(ValueError, match="prediction lists"):
        compute_metrics([["a"]], ["a", "b"], ks=[1])


def test_sasrec_scored_by_sid_counts_items_sharing_a_sid_as_one():
    """Items a and b share SID X. User 0 wants a and SASRec ranks b, c, a: by item id the hit is at rank 3, by SID
    the list is X, Y (the second X dropped) and the hit is at rank 1. User 1 wants c, ranked second both ways."""
    import torch

    from minionerec.ranking.sasrec import score, score_by_sid

    items, sid_of = ["a", "b", "c"], {"a": "X", "b": "X", "c": "Y"}
    ranked, targets = torch.tensor([[1, 2, 0], [0, 2, 1]]), torch.tensor([0, 2])  # [users, top-k] item rows; [users]
    by_item, by_sid = score(ranked, targets, items), score_by_sid(ranked, targets, items, sid_of)
    assert by_item["NDCG@3"] == pytest.approx((0.5 + 1 / math.log2(3)) / 2)
    assert by_sid["NDCG@1"] == by_sid["HR@1"] == 0.5 and by_item["HR@1"] == 0.0
    assert by_sid["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert by_sid["duplicate"] == 0 and by_sid["invalid"] == 0
