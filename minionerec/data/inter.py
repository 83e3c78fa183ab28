"""Interaction files (.inter) -> the MiniOneRec layout: what convert_dataset.py and the data/ scripts share.

An .inter file is a TSV with the header user_id:token, item_id_list:token_seq, item_id:token (one row per
target interaction, the history space-separated), as the Amazon preprocessing writes it.
"""
from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pandas as pd

from minionerec.data.formats import DataError, load_item_meta, load_sid_index, sid_string, write_info, write_split
from minionerec.run.atomic import atomic_path

SPLITS = ("train", "valid", "test")
INTER_HEADER = ["user_id:token", "item_id_list:token_seq", "item_id:token"]


def read_inter(path, allow_repeated_rows: bool = False) -> list[tuple[str, list[str], str]]:
    """(user_id, history item ids, target item id) per line of an .inter TSV.

    A row that repeats an earlier one exactly (same user, history and target) cannot come from one pass over a
    user's interactions, whose histories grow: it is a copied or concatenated file, and would train twice. It is
    refused unless `allow_repeated_rows` (then kept, with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with path.open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        if next(reader, None) != INTER_HEADER:
            raise DataError(f"{path}: header must be {' | '.join(INTER_HEADER)}")
        for lineno, parts in enumerate(reader, 2):
            if len(parts) != 3:
                raise DataError(f"{path}: line {lineno}: expected 3 tab-separated fields")
            rows.append((parts[0], parts[1].split(), parts[2]))
    if not rows:
        raise DataError(f"{path}: no data rows")
    first_line: dict[tuple, int] = {}  # (user, history, target) -> the line it first appears on
    repeats = []  # (line, the earlier line it repeats)
    for lineno, (user, history, item) in enumerate(rows, 2):
        earlier = first_line.setdefault((user, tuple(history), item), lineno)
        if earlier != lineno:
            repeats.append((lineno, earlier))
    if repeats and not allow_repeated_rows:
        line, original = repeats[0]
        raise DataError(f"{path}: {len(repeats):,} of {len(rows):,} rows repeat an earlier row exactly (same user, "
                        f"history and target; line {line} repeats line {original}): a file copied twice? Remove "
                        "them, or give --allow_repeated_rows true to train on every copy")
    if repeats:
        print(f"warning: {path}: {len(repeats):,} interaction row(s) repeat an earlier row exactly (same user, "
              "history and target); kept (--allow_repeated_rows)", file=sys.stderr)
    return rows


def write_inter(rows, path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(INTER_HEADER)
        writer.writerows((user, " ".join(history), item) for user, history, item in rows)


def rows_to_frame(rows, item_meta: dict, sid_index: dict, source) -> pd.DataFrame:
    """One CSV row per interaction; every item must have a title and a SID."""
    records = []
    for i, (user, history, item) in enumerate(rows, 2):
        for item_id in [*history, item]:
            if item_id not in item_meta or item_id not in sid_index:
                raise DataError(f"{source}: line {i}: item {item_id} is missing from item.json or index.json")
        records.append({
            "user_id": user,
            "history_item_title": [item_meta[h]["title"] for h in history],
            "item_title": item_meta[item]["title"],
            "history_item_id": history,
            "item_id": item,
            "history_item_sid": [sid_string(sid_index[h]) for h in history],
            "item_sid": sid_string(sid_index[item]),
        })
    return pd.DataFrame.from_records(records)


def convert(inter_dir, category, item_meta_path, sid_index_path, output_dir,
            allow_repeated_rows: bool = False) -> dict[str, int]:
    """Validate everything first, then write; returns rows per split."""
    item_meta, sid_index = load_item_meta(item_meta_path), load_sid_index(sid_index_path)
    frames = {}
    for split in SPLITS:
        path = Path(inter_dir, f"{category}.{split}.inter")
        frames[split] = rows_to_frame(read_inter(path, allow_repeated_rows), item_meta, sid_index, path)
    out = Path(output_dir)
    for split, frame in frames.items():
        write_split(frame, out / split / f"{category}.csv")
    write_info(sid_index, item_meta, out / "info" / f"{category}.txt")
    (out / "index").mkdir(parents=True, exist_ok=True)
    for src, name in ((sid_index_path, "index"), (item_meta_path, "item")):
        dst = out / "index" / f"{category}.{name}.json"
        if Path(src).resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    return {split: len(frame) for split, frame in frames.items()}
