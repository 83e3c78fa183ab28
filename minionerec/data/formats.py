"""Readers and writers for the MiniOneRec file formats (see DESIGN.md).

Every reader validates while it loads and raises `DataError` with one line naming the file (and
the row, for CSVs), so a bad dataset fails before any model is loaded.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd

from minionerec.data.list_columns import parse_list_cell, parse_list_columns
from minionerec.run.atomic import atomic_path
from minionerec.run.preflight import file_problem

SPLIT_COLUMNS = [
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
]
LIST_COLUMNS = ["history_item_title", "history_item_id", "history_item_sid"]
_SID_TOKEN = re.compile(r"<[^<>]+>")


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and row."""


def sid_string(tokens: list[str]) -> str:
    """["<a_1>", "<b_2>"] -> "<a_1><b_2>"."""
    return "".join(tokens)


def split_sid(sid: str) -> list[str]:
    """"<a_1><b_2>" -> ["<a_1>", "<b_2>"]; an empty list when `sid` is not made of <...> tokens."""
    tokens = _SID_TOKEN.findall(sid)
    return tokens if "".join(tokens) == sid else []


def sid_vocabulary(sid_index: dict[str, list[str]]) -> list[str]:
    """Every distinct SID token of an index, sorted by level then code (stable across runs)."""
    tokens = {t for sid in sid_index.values() for t in sid}

    def key(token: str):
        level, _, code = token.strip("<>").rpartition("_")
        return (level, int(code)) if code.isdigit() else (level, 0, code)

    return sorted(tokens, key=key)


def existing_file(path) -> Path:
    """`path`, a regular non-empty file; DataError naming it otherwise."""
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def _load_json_object(path) -> dict:
    path = existing_file(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{path}: expected a non-empty JSON object")
    return obj


def load_sid_index(path) -> dict[str, list[str]]:
    """index.json: {item_id: ["<a_1>", "<b_2>", ...]}; any number of levels, the same for all items."""
    index = _load_json_object(path)
    levels = None
    for item_id, sid in index.items():
        if not isinstance(sid, list) or not sid or not all(
            isinstance(t, str) and split_sid(t) == [t] for t in sid
        ):
            raise DataError(f"{path}: item {item_id}: SID must be a list of '<...>' tokens, got {sid!r}")
        if levels is None:
            levels = len(sid)
        elif len(sid) != levels:
            raise DataError(f"{path}: item {item_id}: SID has {len(sid)} levels, others have {levels}")
    return {str(k): v for k, v in index.items()}


def load_item_meta(path) -> dict[str, dict]:
    """item.json: {item_id: {"title", "description", ...}}; every item needs a title."""
    meta = _load_json_object(path)
    for item_id, info in meta.items():
        if not isinstance(info, dict) or not isinstance(info.get("title"), str):
            raise DataError(f"{path}: item {item_id}: expected an object with a string 'title'")
    return {str(k): v for k, v in meta.items()}


def load_info(path) -> list[tuple[str, str, str]]:
    """info txt: one `sid<TAB>title<TAB>item_id` per line."""
    path = existing_file(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not split_sid(parts[0]):
                raise DataError(f"{path}: line {lineno}: expected 'sid<TAB>title<TAB>item_id'")
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def _parse_list(path, row_number: int, column: str, cell) -> list:
    try:
        value = parse_list_cell(cell) if isinstance(cell, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list):
        raise DataError(f"{path}: row {row_number}: column '{column}' is not a list literal: {str(cell)[:60]!r}")
    for element in value:  # a nested list or None would become an item / a title like "['400']" or "None"
        if isinstance(element, bool) or not isinstance(element, (str, int)):
            raise DataError(f"{path}: row {row_number}: column '{column}' holds {element!r}; expected plain "
                            "strings (titles, SIDs) or item ids")
    return value


def load_catalogue(sid_index_path: str = "", info_file: str = "") -> dict[str, list[str]]:
    """item_id -> SID tokens, in catalogue order (the rows SASRec scores), from index.json or else an info txt."""
    if sid_index_path:
        return load_sid_index(sid_index_path)
    return {item_id: split_sid(sid) for sid, _, item_id in load_info(info_file)}


def load_split(path, sid_index: dict[str, list[str]] | None = None, item_meta: dict | None = None) -> pd.DataFrame:
    """A train/valid/test CSV with list columns parsed and every row checked.

    With `sid_index`, each SID must belong to an item of the index; with `item_meta`, each item id
    must be in item.json. Row numbers in errors count the header as row 1, as a spreadsheet does.
    """
    path = existing_file(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"{path}: no data rows")
    known_sids = {sid_string(s) for s in sid_index.values()} if sid_index is not None else None

    # a whole column at a time when every row has the usual shape; else row by row, naming the first bad row
    parsed = parse_list_columns(df, known_sids, item_meta) or _checked_list_columns(path, df, known_sids, item_meta)
    for c in LIST_COLUMNS:
        df[c] = parsed[c]
    return df


def _checked_list_columns(path, df: pd.DataFrame, known_sids: set | None, item_meta: dict | None) -> dict:
    """load_split's row-by-row reader (the reference of list_columns.parse_list_columns): raises DataError at the
    first bad row."""
    parsed = {c: [] for c in LIST_COLUMNS}
    strings: dict[str, str] = {}  # one object per distinct string, as parse_list_columns keeps them
    for i, row in enumerate(zip(*(df[c] for c in LIST_COLUMNS), df["item_sid"], df["item_id"]), start=2):
        lists = [[strings.setdefault(str(x), str(x)) for x in _parse_list(path, i, c, cell)]
                 for c, cell in zip(LIST_COLUMNS, row)]
        if len({len(v) for v in lists}) != 1:
            raise DataError(f"{path}: row {i}: history columns have different lengths")
        for c, value in zip(LIST_COLUMNS, lists):
            parsed[c].append(value)
        _, history_ids, history_sids = lists  # LIST_COLUMNS' order
        if known_sids is not None:
            for sid in [*history_sids, row[3]]:
                if sid not in known_sids:
                    raise DataError(f"{path}: row {i}: SID {sid} is not in the SID index")
        if item_meta is not None:
            for item_id in [*history_ids, row[4]]:
                if item_id not in item_meta:
                    raise DataError(f"{path}: row {i}: item id {item_id} is not in item.json")
    return parsed


def write_split(df: pd.DataFrame, path) -> None:
    """Write a split CSV in the upstream layout (list columns as Python literals)."""
    out = df[SPLIT_COLUMNS].copy()
    for c in ("history_item_title", "history_item_sid"):
        out[c] = out[c].map(lambda v: repr(list(v)))
    # Upstream stores item ids as integers when they are numeric: [3437, 642], not ['3437', '642'].
    out["history_item_id"] = out["history_item_id"].map(lambda v: repr([int(x) if str(x).isdigit() else x for x in v]))
    with atomic_path(path) as tmp:  # a kill mid-write keeps the previous CSV whole
        out.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)


def write_info(sid_index: dict[str, list[str]], item_meta: dict[str, dict], path) -> None:
    """info txt for every item of the index, in index order."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for item_id, sid in sid_index.items():
            title = item_meta[item_id]["title"].replace("\t", " ").replace("\n", " ")
            f.write(f"{sid_string(sid)}\t{title}\t{item_id}\n")


def find_split(data_dir, split: str, category: str) -> Path:
    """data_dir/{split}/{category}*.csv; exactly one file must match."""
    matches = sorted(Path(data_dir, split).glob(f"{category}*.csv"))
    if len(matches) != 1:
        raise DataError(f"{Path(data_dir, split)}: expected one '{category}*.csv', found {len(matches)}")
    return matches[0]
