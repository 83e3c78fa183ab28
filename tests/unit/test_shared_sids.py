"""Items sharing a SID: which item a SID is written as, and bench/shared_sids.py's NDCG@10 by SID and by item
against values worked out by hand."""
import json
import math

import pytest

from minionerec.ranking.shared_sids import as_items, as_sids, representative_items, sid_groups

X, Y = "<a_1><b_1>", "<a_2><b_2>"  # items 1 and 2 share X; item 3 has Y


def test_a_shared_sid_is_written_as_its_most_frequent_train_target():
    groups = sid_groups({"1": X, "2": X, "3": Y})
    assert groups == {X: ["1", "2"], Y: ["3"]}
    assert representative_items(groups, ["2", "1", "2", "3"]) == {X: "2", Y: "3"}
    assert representative_items(groups, ["2", "1"])[X] == "1"  # a tie: catalogue order
    assert as_items([[X, Y, "<a_9><b_9>"]], {X: "2", Y: "3"}) == [["2", "3", "<a_9><b_9>"]]  # unknown: still a miss
    assert as_sids([["2", "3", "1"], ["3"]], {"1": X, "2": X, "3": Y}) == [[X, Y], [Y]]  # X listed once


def test_bench_scores_each_method_by_sid_and_by_item(tmp_path, capsys):
    from bench import shared_sids

    (tmp_path / "index.json").write_text(json.dumps({"1": ["<a_1>", "<b_1>"], "2": ["<a_1>", "<b_1>"],
                                                     "3": ["<a_2>", "<b_2>"]}))
    header = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    train = [("u1", 3, "2", Y, X), ("u2", 3, "2", Y, X), ("u3", 3, "1", Y, X)]  # item 2 is X's usual target
    (tmp_path / "train.csv").write_text(header + "".join(
        f"{u},\"['t']\",t,[{h}],{i},['{hs}'],{s}\n" for u, h, i, hs, s in train))
    targets = [("1", X), ("3", Y)]  # user A wants item 1 (SID X), user B item 3
    llm = [{"item_id": i, "item_sid": s, "predict": [X, Y]} for i, s in targets]  # X is written as item 2
    sasrec = [{"item_id": "1", "predict": ["2", "1", "3"]}, {"item_id": "3", "predict": ["3", "1", "2"]}]
    paths = {}
    for name, rows in (("llm", llm), ("sasrec", sasrec)):
        paths[name] = str(tmp_path / f"{name}.json")
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "category": "Toy", "data": {"index": str(tmp_path / "index.json"), "train": str(tmp_path / "train.csv")},
        "seeds": {"42": {"predictions": {"MiniOneRec SFT": {"test": paths["llm"]},
                                         "MiniOneRec SFT+RL": {"test": paths["llm"]}},
                         "sasrec": {"predictions": {"test": paths["sasrec"]}}}}}))
    out = shared_sids.main(shared_sids.Args(runs=str(run)))["Toy"]
    assert out["shared"] == {"sids": 1, "items": 2, "test": 0.5}
    table, r2 = out["seeds"]["42"]["test"], 1 / math.log2(3)
    assert table["MiniOneRec SFT+RL"] == pytest.approx({"sid": (1 + r2) / 2, "item": (0 + r2) / 2})
    assert table["SASRec"] == pytest.approx({"sid": 1.0, "item": (r2 + 1) / 2})
    printed = capsys.readouterr().out
    assert f"by SID {(1 + r2) / 2:.3f}, by item {(r2 / 2) / ((r2 + 1) / 2):.3f}" in printed
    # per user, SFT+RL - SASRec: by SID user A 1 - 1, user B r2 - 1; by item user A 0 - r2 (X is item 2), B r2 - 1
    paired = out["paired"]["test"]
    assert paired["sid"]["mean"] == pytest.approx((r2 - 1) / 2) and paired["item"]["mean"] == pytest.approx(-0.5)
    assert paired["item"]["seeds"] == 1 and f"SFT+RL - SASRec per user, by item: {-0.5:+.4f}" in printed
    (tmp_path / "sasrec.json").write_text(json.dumps(sasrec[::-1]))  # other rows than the LLM's: no pairing
    with pytest.raises(SystemExit, match="error: seed 42: SASRec and MiniOneRec scored different test rows$"):
        shared_sids.main(shared_sids.Args(runs=str(run)))


def test_bench_without_runs_is_a_one_line_error():
    from bench import shared_sids

    with pytest.raises(SystemExit, match="--runs must name bench output directories"):
        shared_sids.main(shared_sids.Args())
