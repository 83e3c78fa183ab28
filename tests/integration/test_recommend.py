"""recommend.py on the tiny model: top-K items with ids, titles, SIDs and log-probability scores."""
from __future__ import annotations

import json
import re

import pytest

import recommend
from minionerec.serving.recommender import history_prompt
from minionerec.ranking.constrained import exact_rank
from minionerec.data.formats import load_item_meta, load_sid_index, load_split, sid_string, write_split
from minionerec.model.loading import load_model, load_tokenizer
from minionerec.serving.reload import load_reload_catalogue
from minionerec.serving.recommender import Recommender, load_catalogue
from minionerec.ranking.shared_sids import train_target_counts


def test_exhaustive_beams_give_the_exact_top_k_with_log_probability_scores(paths, tmp_path):
    """80 beams over the 80-item catalogue: beam search keeps every path, so it must equal brute force."""
    meta = load_item_meta(paths["item_meta_path"])
    index = load_sid_index(paths["sid_index_path"])
    title_of_3 = meta["3"]["title"]
    out = tmp_path / "recs.jsonl"
    results = recommend.main(recommend.Args(**paths, history=f"1|2|{title_of_3};7", item_sep="|", k=5, num_beams=80,
                                            output_format="jsonl", output_path=str(out)))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["history"] for r in rows] == [["1", "2", "3"], ["7"]]  # the title resolved to item 3

    tokenizer = load_tokenizer(paths["base_model"])
    model = load_model(paths["base_model"]).eval()
    trie = load_catalogue(paths["sid_index_path"], "", tokenizer).trie
    for history, row, ranked in zip([["1", "2", "3"], ["7"]], rows, results):
        prompt = history_prompt([sid_string(index[i]) for i in history])
        exact_sids, exact_scores = exact_rank(model, tokenizer, prompt, trie)
        assert [r["sid"] for r in row["recommendations"]] == exact_sids[:5]
        for rec, score in zip(row["recommendations"], exact_scores[:5]):
            assert rec["score"] == pytest.approx(score, abs=1e-4)  # the SID path's log-probability
            assert sid_string(index[rec["item_id"]]) == rec["sid"] and rec["title"] == meta[rec["item_id"]]["title"]
        assert [r.sid for r in ranked] == exact_sids[:5]
        assert all(a >= b for a, b in zip(exact_scores, exact_scores[1:])) and exact_scores[0] < 0


def test_history_file_and_table_output(paths, tmp_path, capsys):
    histories = tmp_path / "users.jsonl"
    histories.write_text('{"id": "alice", "history": ["4", "5", "6"]}\n\n["6"]\n')
    results = recommend.main(recommend.Args(**paths, history_file=str(histories), k=3, num_beams=10, max_history=2))
    table = capsys.readouterr().out
    assert "== alice: history 5, 6" in table and "== 3: history 6" in table  # ids echoed, else the line number
    assert len(results) == 2 and all(len(r) == 3 for r in results)
    first = results[0][0]
    assert f"   1  {first.item_id:<12}{first.score:>10.4f}  {first.sid}" in table


@pytest.mark.parametrize("flags, message", [
    (dict(history="1,999"), r"history 0\[1\]: unknown item '999'"),
    (dict(history="1", k=11), "--k must be in 1..--num_beams"),
    (dict(), "exactly one of --history or --history_file"),
    (dict(history="1", output_format="csv"), "--output_format"),
    (dict(history="1", device="bogus"), "--device must be auto, cpu, cuda or cuda:N, got 'bogus'"),
    (dict(history="1", device="cuda:99"), "--device cuda:99: (no CUDA device is visible|only)"),
    (dict(history=26), "--history must be text"),  # e.g. a recipe's unquoted 0x1A: 26 can no longer be told apart
    (dict(history=("1", 2)), "--history: item 2 is not text"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(paths, tmp_path, flags, message, monkeypatch):
    out = tmp_path / "recs.jsonl"
    monkeypatch.setattr(recommend, "load_model", lambda *a, **k: pytest.fail("the model loaded before the checks"))
    with pytest.raises(SystemExit, match=message):
        recommend.main(recommend.Args(**paths, num_beams=10, output_path=str(out), **flags))
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--history", "0x1A", "--k", "2"], ["--history='0x1A'", "--k", "2"]),
    (["--history=1_2"], ["--history='1_2'"]),
    (["-history", "1e3,0o7;True", "--item-sep", ","], ["-history='1e3,0o7;True'", "--item-sep=','"]),
    (["--history", "-5"], ["--history='-5'"]),  # not a flag (fire's rule), so the value
    (["--history", "--k", "2"], ["--history", "--k", "2"]),  # no value: fire's True, refused by the checks
    (["--history_file", "0x1A", "--", "--history", "1"], ["--history_file", "0x1A", "--", "--history", "1"]),
])
def test_history_flags_reach_fire_as_string_literals(argv, expected):
    assert recommend.verbatim_flags(argv) == expected


def test_bad_history_file_names_the_line(paths, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('["1"]\n{"history": "not a list"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl: line 2: expected a JSON list"):
        recommend.main(recommend.Args(**paths, history_file=str(bad)))




def test_a_shared_sid_shows_its_most_frequent_train_target(paths, demo_data, demo_category, tmp_path):
    """Two items given one SID decode as one answer: --train_path shows the group's most frequent next item in
    train (bench/quality.py's "by item" rule); without it the group's first item in index order."""
    train_path = demo_data / "train" / f"{demo_category}.csv"
    counts = train_target_counts(train_path)
    index = load_sid_index(paths["sid_index_path"])
    order = list(index)
    earlier, frequent = next((a, b) for i, a in enumerate(order) for b in order[i + 1:] if counts[b] > counts[a])
    index[frequent] = index[earlier]
    shared = sid_string(index[earlier])
    shared_index = tmp_path / "shared.index.json"
    shared_index.write_text(json.dumps(index))
    train = load_split(train_path)  # the train split made with this index: `frequent` rows carry the shared SID
    train.loc[train["item_id"] == frequent, "item_sid"] = shared
    train_path = tmp_path / "train.csv"
    write_split(train, train_path)

    tokenizer = load_tokenizer(paths["base_model"])
    assert load_catalogue(shared_index, "", tokenizer).item_of_sid[shared] == earlier
    counted = load_catalogue(shared_index, "", tokenizer, train_path=train_path)
    assert counted.item_of_sid[shared] == frequent
    server = Recommender(None, tokenizer, counted, num_beams=10)  # serve.py's /catalogue/reload keeps the counts
    assert load_reload_catalogue(server, tmp_path, shared_index.name, "").item_of_sid[shared] == frequent

    distinct = len(index) - 1  # every SID in the top k: the shared one is among them
    flags = {**paths, "sid_index_path": str(shared_index)}
    for train, shown in (("", earlier), (str(train_path), frequent)):
        [ranked] = recommend.main(recommend.Args(**flags, train_path=train, history="1", k=distinct, num_beams=distinct))
        [rec] = [r for r in ranked if r.sid == shared]
        assert rec.item_id == shown


def test_a_train_split_of_another_index_is_one_line(paths, demo_data, demo_category, tmp_path):
    """--train_path of another dataset (item ids are often the same numbers) would count the wrong items: each
    row's next item must carry this index's SID."""
    train = load_split(demo_data / "train" / f"{demo_category}.csv")
    first_target = train["item_id"].iloc[0]
    other = next(sid for sid in train["item_sid"] if sid != train["item_sid"].iloc[0])
    train.loc[0, "item_sid"] = other
    foreign = tmp_path / "other_train.csv"
    write_split(train, foreign)
    with pytest.raises(SystemExit, match=rf"^error: .*other_train.csv: row 2: next item {first_target} has SID "
                                         rf"{re.escape(other)} here but SID .* in the index: give the train split "
                                         r"made with this index"):
        recommend.main(recommend.Args(**paths, train_path=str(foreign), history="1"))
