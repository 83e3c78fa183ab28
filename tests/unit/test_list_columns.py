"""list_columns (a split's list columns a whole column at a time) == formats' row-by-row reader, and every error
still names its row as the row-by-row reader does."""
from __future__ import annotations

import ast

import pandas as pd
import pytest

from minionerec.data import formats
from minionerec.data.formats import DataError, load_split
from minionerec.data.list_columns import parse_list_cell, parse_list_columns

HEADER = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"


def row_by_row(path, index=None, meta=None, monkeypatch=None):
    monkeypatch.setattr(formats, "parse_list_columns", lambda *args: None)
    try:
        return load_split(path, index, meta)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("cell", ["[]", "[1, 2]", "[0]", "['a', \"b'c\"]", "[-0, 5]", "['<a_1>']", "['x\\\\n']",
                                  "['a','b']", "[1,2]", "['a\"b']", "[\"it's\"]", "['']", "[' spaced ', 'é ü']"])
def test_a_cell_parses_as_literal_eval_does(cell):
    assert parse_list_cell(cell) == ast.literal_eval(cell)


@pytest.mark.parametrize("cell", ["[007]", "['a'", "[a]", "['a' 'b'", "['a\x00']"])
def test_a_cell_literal_eval_refuses_is_refused(cell):
    with pytest.raises((ValueError, SyntaxError)):
        ast.literal_eval(cell)
    with pytest.raises((ValueError, SyntaxError)):
        parse_list_cell(cell)


def write(path, rows):
    path.write_text(HEADER + "".join(rows))
    return path


def test_usual_and_unusual_rows_give_the_row_by_row_values(tmp_path, monkeypatch):
    path = write(tmp_path / "s.csv", [
        "u1,\"['Red Beaker', 'Blue Flask']\",Solder,\"[1, 2]\",3,\"['<a_1>', '<a_2>']\",<a_3>\n",
        "u2,[],Solder,[],3,[],<a_3>\n",
        "u3,\"[\"\"Bob's Kit\"\", 'x, y']\",Solder,\"['7', '8']\",3,\"['<a_1>', '<a_2>']\",<a_3>\n",  # both unusual
        "u4,\"['a\\'b']\",T,[10],3,['<a_1>'],<a_3>\n",  # an escape: literal_eval
    ])
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fast = parse_list_columns(df, None, None)
    reference = row_by_row(path, monkeypatch=monkeypatch)
    assert fast is not None
    for column, values in fast.items():
        assert values == reference[column].tolist(), column
    assert fast["history_item_title"][2] == ["Bob's Kit", "x, y"] and fast["history_item_id"][2] == ["7", "8"]
    # one object per distinct string, shared by every row holding it
    assert fast["history_item_sid"][0][0] is fast["history_item_sid"][2][0]


@pytest.mark.parametrize("bad_row, message", [
    ("u2,\"['A', 'B']\",T,[1],3,['<a_1>'],<a_3>\n", "row 3: history columns have different lengths"),
    ("u2,['A'],T,[1],3,['<a_9>'],<a_3>\n", "row 3: SID <a_9> is not in the SID index"),
    ("u2,['A'],T,[1],3,['<a_1>'],<a_9>\n", "row 3: SID <a_9> is not in the SID index"),
    ("u2,['A'],T,[99],3,['<a_1>'],<a_3>\n", "row 3: item id 99 is not in item.json"),
    ("u2,['A'],T,[1],99,['<a_1>'],<a_3>\n", "row 3: item id 99 is not in item.json"),
    ("u2,['A'],T,[1],3,[<a_1>],<a_3>\n", "row 3: column 'history_item_sid' is not a list literal"),
    ("u2,[['A']],T,[1],3,['<a_1>'],<a_3>\n", "row 3: column 'history_item_title' holds ['A']"),
])
def test_a_bad_row_is_named_as_before(tmp_path, bad_row, message):
    index = {"1": ["<a_1>"], "2": ["<a_2>"], "3": ["<a_3>"]}
    meta = {k: {"title": k} for k in index}
    path = write(tmp_path / "s.csv", ["u1,['A'],T,[1],3,['<a_1>'],<a_3>\n", bad_row])
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_split(path, index, meta)


def test_the_shared_datasets_parse_as_row_by_row(monkeypatch):
    """The two real splits (titles with apostrophes and escapes: both paths), when ../shared is beside the repo."""
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[3].glob("shared/data/Amazon/train/*.csv"))
    if not files:
        pytest.skip("../shared/data not present")
    for path in files:
        fast = load_split(path)
        reference = row_by_row(path, monkeypatch=monkeypatch)
        assert all(fast[c].tolist() == reference[c].tolist() for c in fast.columns), path
