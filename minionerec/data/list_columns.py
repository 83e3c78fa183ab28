"""A split's list columns parsed a whole column at a time (pyarrow), for splits of millions of rows.

`formats.load_split` reads each row's three list cells ("['Title A', 'Title B']", "[3437, 642]",
"['<a_1><b_2><c_3>', ...]") and checks them against the index and item.json. Row by row that is ~30 s per
million rows in Python. Here the usual shape (Python's repr of plain strings and non-negative ids) is matched,
split and checked with Arrow kernels; the other rows (a title with an apostrophe is written "Bob's Kit") are
parsed one by one; only the Python lists are built per row, each distinct string one object shared by every row
that holds it (a 1M-row split repeats each title ~100 times). When a cell cannot be parsed or a check fails it
returns None, and the row-by-row reader parses the file again and names the first bad row, so errors read
exactly as before. Same values as the row-by-row reader (test_list_columns.py).
"""
from __future__ import annotations

import ast
import gc
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Python's repr of a list of strings without escapes or line breaks: ['<a_1><b_2>', "Bob's Kit"]
_STRING = r"'[^'\\\r\n\x00]*'|\"[^\"\\\r\n\x00]*\""
_STRING_LIST = re.compile(rf"\[(?:(?:{_STRING})(?:, (?:{_STRING}))*)?\]")
_STRING_ITEM = re.compile(_STRING)
_INT_LIST = re.compile(r"\[(?:-?(?:0|[1-9][0-9]*)(?:, -?(?:0|[1-9][0-9]*))*)?\]")


def parse_list_cell(cell: str):
    """A list cell's value, as ast.literal_eval gives it (which parses the cell as a program: ~10x slower);
    raises what it raises."""
    if _STRING_LIST.fullmatch(cell):
        return [item[1:-1] for item in _STRING_ITEM.findall(cell)]
    if _INT_LIST.fullmatch(cell):
        return [int(x) for x in cell[1:-1].split(", ")] if len(cell) > 2 else []
    return ast.literal_eval(cell)


def plain_elements(value) -> bool:
    """A list of strings or ints only: a nested list or None would become an item or a title like "['400']"."""
    return isinstance(value, list) and all(isinstance(e, (str, int)) and not isinstance(e, bool) for e in value)


_ITEM = r"'[^'\\\r\n\x00]*'"  # single-quoted only: then "', '" occurs only between items (RE2 syntax)
USUAL = {  # column -> (whole-cell pattern, characters around the items, separator between them)
    "history_item_title": (rf"^\[(?:{_ITEM}(?:, {_ITEM})*)?\]$", 2, "', '"),
    "history_item_id": (r"^\[(?:(?:0|[1-9][0-9]*)(?:, (?:0|[1-9][0-9]*))*)?\]$", 1, ", "),  # str(int) == text
    "history_item_sid": (rf"^\[(?:{_ITEM}(?:, {_ITEM})*)?\]$", 2, "', '"),
}


def _arrow(column: pd.Series) -> pa.ChunkedArray:
    array = getattr(column.array, "_pa_array", None)  # pandas' Arrow-backed strings (pandas >= 3's default)
    return array if array is not None else pa.chunked_array([pa.array(column.tolist(), type=pa.string())])


def _split(cells: pa.ChunkedArray, column: str) -> pa.ChunkedArray:
    """list<string> per usual-shape cell ("[]" -> [], not the [""] a split of "" gives)."""
    _, around, separator = USUAL[column]
    parts = pc.split_pattern(pc.utf8_slice_codeunits(cells, around, -around), separator)
    return pc.if_else(pc.equal(cells, "[]"), pa.scalar([], type=parts.type), parts)


def _python_lists(lists: pa.ChunkedArray, strings: dict) -> list[list[str]]:
    """Python lists whose strings are shared through `strings` (string -> the one object kept for it). Built with
    the cyclic garbage collector paused: each of its passes over the growing lists found nothing to free and took
    most of the time (lists of strings hold no cycles)."""
    flat = pc.list_flatten(lists)
    unique = pc.unique(flat)
    shared = [strings.setdefault(s, s) for s in unique.to_pylist()]
    positions = pc.index_in(flat, value_set=unique).to_numpy(zero_copy_only=False).tolist()
    ends = np.cumsum(pc.list_value_length(lists).to_numpy(zero_copy_only=False)).tolist()
    collecting = gc.isenabled()
    gc.disable()
    try:
        values = [shared[i] for i in positions]
        return [values[start:end] for start, end in zip([0, *ends[:-1]], ends)]
    finally:
        if collecting:
            gc.enable()


def _all_in(values: pa.ChunkedArray, known) -> bool:
    return bool(pc.all(pc.is_in(values, value_set=pa.array(list(known), type=values.type))).as_py())


def parse_list_columns(df: pd.DataFrame, known_sids: set | None, item_meta: dict | None) -> dict | None:
    """{column: one list per row} for the three list columns when every row parses and passes load_split's checks
    (equal history lengths, SIDs in the index, ids in item.json); None otherwise."""
    cells = {c: _arrow(df[c]) for c in USUAL}
    usual = np.logical_and.reduce([pc.match_substring_regex(cells[c], USUAL[c][0]).to_numpy(zero_copy_only=False)
                                   for c in USUAL])
    keep = pa.array(usual)
    split = {c: _split(pc.if_else(keep, cells[c], "[]"), c) for c in USUAL}  # other rows: [] for now
    if known_sids is not None and not (_all_in(pc.list_flatten(split["history_item_sid"]), known_sids)
                                       and _all_in(_arrow(df["item_sid"]), known_sids)):
        return None
    if item_meta is not None and not (_all_in(pc.list_flatten(split["history_item_id"]), item_meta)
                                      and _all_in(_arrow(df["item_id"]), item_meta)):
        return None
    strings: dict[str, str] = {}
    lists = {c: _python_lists(split[c], strings) for c in USUAL}
    for row in np.flatnonzero(~usual).tolist():  # parsed one by one, then the same checks
        for c in USUAL:
            try:
                value = parse_list_cell(df[c].iat[row])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return None
            if not plain_elements(value):
                return None
            lists[c][row] = [strings.setdefault(str(x), str(x)) for x in value]
        if known_sids is not None and not set(lists["history_item_sid"][row]) <= known_sids:
            return None
        if item_meta is not None and not all(i in item_meta for i in lists["history_item_id"][row]):
            return None
    lengths = [np.fromiter(map(len, lists[c]), dtype=np.int64, count=len(df)) for c in USUAL]
    if not all(np.array_equal(lengths[0], other) for other in lengths[1:]):
        return None
    return lists
