"""evaluate.py end to end on the tiny model, and evaluate.sh with 2 processes == 1 process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import evaluate
from minionerec.run.flags import FlagError, parse_args
from minionerec.data.formats import load_sid_index, sid_string
from minionerec.ranking.evaluation import make_batches, popularity_ranking, shard
from minionerec.data.prompts import Prompts

ROOT = Path(__file__).resolve().parents[2]


def test_batches_do_not_depend_on_the_number_of_processes():
    lengths = [5, 3, 9, 3, 7, 1, 5, 2, 8]
    batches = make_batches(lengths, batch_size=2)
    assert batches[0] == [5, 7] and batches[1] == [1, 3]  # sorted by length, ties by row
    for world in (1, 2, 3):
        shards = [shard(batches, r, world) for r in range(world)]
        assert sorted(b for s in shards for b in map(tuple, s)) == sorted(map(tuple, batches))
        assert sorted(i for s in shards for b in s for i in b) == list(range(len(lengths)))


def test_popularity_ranking_counts_train_targets():
    targets = ["<a_2>", "<a_1>", "<a_2>", "<a_3>", "<a_1>", "<a_2>"]
    assert popularity_ranking(targets, 2) == ["<a_2>", "<a_1>"]
    assert popularity_ranking(targets, 5) == ["<a_2>", "<a_1>", "<a_3>"]


def test_missing_inputs_fail_before_loading(tmp_path, tiny_model_dir):
    with pytest.raises(SystemExit, match="--test_file file not found"):
        evaluate.main(evaluate.Args(base_model=str(tiny_model_dir), test_file=str(tmp_path / "nope.csv"),
                                    sid_index_path="x"))
    with pytest.raises(SystemExit, match="--base_model"):
        evaluate.main(evaluate.Args(base_model=str(tmp_path / "no_model")))


def test_evaluate_writes_predictions_and_metrics(tmp_path, demo_data, demo_category, tiny_model_dir, capsys):
    index_path = demo_data / "index" / f"{demo_category}.index.json"
    args = evaluate.Args(base_model=str(tiny_model_dir), test_file=str(demo_data / "test" / "Demo.csv"),
                         sid_index_path=str(index_path), train_file=str(demo_data / "train" / "Demo.csv"),
                         result_json=str(tmp_path / "pred.json"), num_beams=10, batch_size=4, sample=9)
    metrics = evaluate.main(args)
    records = json.loads((tmp_path / "pred.json").read_text())
    catalogue = {sid_string(s) for s in load_sid_index(index_path).values()}
    assert len(records) == 9
    for record in records:
        assert {"user_id", "item_sid", "history_item_sid", "predict"} <= set(record)
        # upstream evaluate.py's row layout first: its calc.py reads `output` and `predict`
        assert list(record)[:3] == ["input", "output", "predict"]
        assert record["output"] == record["item_sid"] + "\n"
        assert record["input"] == Prompts("upstream").eval_input(record["history_item_sid"])
        assert len(record["predict"]) == 10 and len(set(record["predict"])) == 10
        assert set(record["predict"]) <= catalogue
    ours = metrics["constrained beam search"]
    assert ours["invalid"] == 0 and ours["duplicate"] == 0 and ours["users"] == 9
    assert "popularity (train)" in metrics
    table = capsys.readouterr().out
    assert "HR@10" in table and "HR@20" not in table  # K <= num_beams only


def test_upstream_flag_names_are_aliases(capsys):
    args = parse_args(evaluate.Args, {"test_data_path": "t.csv", "result_json_data": "r.json", "K": 5,
                                      "base_model": "m"})
    assert (args.test_file, args.result_json, args.base_model) == ("t.csv", "r.json", "m")
    assert "--K is accepted for compatibility and has no effect" in capsys.readouterr().err
    with pytest.raises(FlagError, match="--test_data_path is another name for --test_file; give only one"):
        parse_args(evaluate.Args, {"test_data_path": "a.csv", "test_file": "b.csv"})


def test_bad_prompt_style_fails_early(tmp_path, tiny_model_dir, demo_data):
    with pytest.raises(SystemExit, match="--prompt_style must be one of upstream, minionerec, got 'x'"):
        evaluate.main(evaluate.Args(base_model=str(tiny_model_dir), test_file=str(demo_data / "test" / "Demo.csv"),
                                    sid_index_path=str(demo_data / "index" / "Demo.index.json"), prompt_style="x",
                                    result_json=str(tmp_path / "r.json")))
    assert not (tmp_path / "r.json").exists()


