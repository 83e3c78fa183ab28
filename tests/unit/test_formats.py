"""Loaders: each malformed input raises one DataError naming the file (and row)."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import CATEGORY, split_path
from minionerec.data.inter import convert
from minionerec.data.formats import (DataError, find_split, load_info, load_item_meta, load_sid_index, load_split,
                             split_sid, sid_vocabulary, write_split)

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "Amazon"


def index_paths(data_dir):
    return data_dir / "index" / f"{CATEGORY}.index.json", data_dir / "index" / f"{CATEGORY}.item.json"


def rewrite_csv(src: Path, dst: Path, edit) -> Path:
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    edit(df)
    df.to_csv(dst, index=False)
    return dst


def test_loads_demo_split_with_parsed_lists(demo_data):
    index_path, meta_path = index_paths(demo_data)
    index, meta = load_sid_index(index_path), load_item_meta(meta_path)
    df = load_split(split_path(demo_data, "train"), index, meta)
    row = df.iloc[0]
    assert isinstance(row.history_item_sid, list) and row.history_item_sid[0].startswith("<a_")
    assert row.history_item_id == [str(x) for x in row.history_item_id]
    assert len(load_info(demo_data / "info" / f"{CATEGORY}.txt")) == len(index)
    assert find_split(demo_data, "test", CATEGORY) == split_path(demo_data, "test")


def test_write_split_round_trips(demo_data, tmp_path):
    df = load_split(split_path(demo_data, "valid"))
    write_split(df, tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_text() == split_path(demo_data, "valid").read_text()


@pytest.mark.parametrize("case, edit, message", [
    ("malformed list", lambda df: df.loc.__setitem__((1, "history_item_sid"), "['<a_1>"), "row 3: column 'history_item_sid' is not a list literal: \"['<a_1>\""),
    ("eval payload", lambda df: df.loc.__setitem__((0, "history_item_id"), "__import__('os')"), "row 2: column 'history_item_id' is not a list literal: \"__import__('os')\""),
    ("unknown SID", lambda df: df.loc.__setitem__((2, "item_sid"), "<a_99><b_99><c_99>"), "row 4: SID <a_99><b_99><c_99> is not in the SID index"),
    ("unknown item", lambda df: df.loc.__setitem__((0, "item_id"), "999999"), "row 2: item id 999999 is not in item.json"),
    ("missing column", lambda df: df.drop(columns=["item_sid"], inplace=True), "missing column(s) item_sid"),
    ("ragged history", lambda df: df.loc.__setitem__((0, "history_item_title"), "[]"), "row 2: history columns have different lengths"),
])
def test_malformed_split_names_file_and_row(demo_data, tmp_path, case, edit, message):
    index_path, meta_path = index_paths(demo_data)
    bad = rewrite_csv(split_path(demo_data, "train"), tmp_path / "bad.csv", edit)
    with pytest.raises(DataError) as err:
        load_split(bad, load_sid_index(index_path), load_item_meta(meta_path))
    assert str(err.value) == f"{bad}: {message}"


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found$"):
        load_split(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty$"):
        load_split(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("user_id,history_item_title,item_title,history_item_id,item_id,"
                                         "history_item_sid,item_sid\n")
    with pytest.raises(DataError, match=r"header\.csv: no data rows$"):
        load_split(tmp_path / "header.csv")


def test_index_and_meta_errors(tmp_path):
    (tmp_path / "ragged.json").write_text(json.dumps({"1": ["<a_1>", "<b_1>"], "2": ["<a_2>"]}))
    with pytest.raises(DataError, match="item 2: SID has 1 levels, others have 2"):
        load_sid_index(tmp_path / "ragged.json")
    (tmp_path / "notok.json").write_text(json.dumps({"1": ["a_1"]}))
    with pytest.raises(DataError, match="item 1: SID must be a list of '<...>' tokens"):
        load_sid_index(tmp_path / "notok.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="broken.json: invalid JSON"):
        load_sid_index(tmp_path / "broken.json")
    (tmp_path / "meta.json").write_text(json.dumps({"1": {"description": "no title"}}))
    with pytest.raises(DataError, match="item 1: expected an object with a string 'title'"):
        load_item_meta(tmp_path / "meta.json")
    (tmp_path / "info.txt").write_text("<a_1><b_2>\ttitle\t1\nno tabs here\n")
    with pytest.raises(DataError, match="info.txt: line 2: expected"):
        load_info(tmp_path / "info.txt")


def test_any_number_of_levels(tmp_path):
    (tmp_path / "idx.json").write_text(json.dumps({"1": ["<a_1>", "<b_2>", "<c_3>", "<d_4>", "<e_5>"],
                                                   "2": ["<a_1>", "<b_2>", "<c_3>", "<d_4>", "<e_6>"]}))
    index = load_sid_index(tmp_path / "idx.json")
    assert sid_vocabulary(index) == ["<a_1>", "<b_2>", "<c_3>", "<d_4>", "<e_5>", "<e_6>"]
    assert split_sid("<a_1><b_22>") == ["<a_1>", "<b_22>"] and split_sid("<a_1>x") == []


def test_convert_writes_nothing_when_an_item_is_missing(demo_data, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(demo_data / "raw", raw)
    index = json.loads((raw / f"{CATEGORY}.index.json").read_text())
    missing = next(iter(index))
    del index[missing]
    (raw / f"{CATEGORY}.index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=f"item {missing} is missing from item.json or index.json"):
        convert(raw, CATEGORY, raw / f"{CATEGORY}.item.json", raw / f"{CATEGORY}.index.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data not present")
def test_real_industrial_data_loads():
    index = load_sid_index(REAL / "index" / "Industrial_and_Scientific.index.json")
    meta = load_item_meta(REAL / "index" / "Industrial_and_Scientific.item.json")
    df = load_split(find_split(REAL, "test", "Industrial_and_Scientific"), index, meta)
    assert len(index) == 3686 and len(df) == 4533
