"""Interaction files + item.json + index.json -> MiniOneRec train/valid/test CSVs and info txt.

Input, as the Amazon preprocessing (data/amazon18_data_process.py) writes it:
  <inter_dir>/<Category>.{train,valid,test}.inter   TSV: user_id:token, item_id_list:token_seq, item_id:token
Output, in the MiniOneRec layout under --output_dir:
  train|valid|test/<Category>.csv, info/<Category>.txt, index/<Category>.{index,item}.json

    python convert_dataset.py --inter_dir raw/ --category Demo --item_meta_path raw/Demo.item.json \
        --sid_index_path raw/Demo.index.json --output_dir data_out/

--reindex true rewrites an existing dataset with a new index.json (same rows, new SIDs):
    python convert_dataset.py --reindex true --data_dir data_out/ --category Demo \
        --sid_index_path new/Demo.index.json --output_dir data_new/
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from minionerec.run import preflight
from minionerec.run.atomic import atomic_path
from minionerec.run.cli import run
from minionerec.data.formats import DataError, load_item_meta, load_sid_index, sid_string, write_info, write_split

SPLITS = ("train", "valid", "test")
INTER_HEADER = ["user_id:token", "item_id_list:token_seq", "item_id:token"]


@dataclass
class Args:
    """Convert interaction files into MiniOneRec CSVs."""

    inter_dir: str = ""  # folder with <Category>.{train,valid,test}.inter
    category: str = ""  # file-name stem, any text (e.g. Industrial_and_Scientific)
    item_meta_path: str = ""  # item.json
    sid_index_path: str = ""  # index.json
    output_dir: str = ""  # MiniOneRec layout is written here
    reindex: bool = False  # instead: rewrite the CSVs of --data_dir with --sid_index_path (rq/reindex.py)
    data_dir: str = ""  # --reindex only: an existing MiniOneRec dataset (train/valid/test/info/index)


def read_inter(path) -> list[tuple[str, list[str], str]]:
    """(user_id, history item ids, target item id) per line of an .inter TSV."""
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


def convert(inter_dir, category, item_meta_path, sid_index_path, output_dir) -> dict[str, int]:
    """Validate everything first, then write; returns rows per split."""
    item_meta, sid_index = load_item_meta(item_meta_path), load_sid_index(sid_index_path)
    frames = {}
    for split in SPLITS:
        path = Path(inter_dir, f"{category}.{split}.inter")
        frames[split] = rows_to_frame(read_inter(path), item_meta, sid_index, path)
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


def main(args: Args) -> None:
    if args.reindex:  # same rows, new SIDs; info txt regenerated
        from rq.reindex import reindex

        for flag in ("data_dir", "category", "sid_index_path", "output_dir"):
            if not getattr(args, flag):
                raise SystemExit(f"error: --{flag} is required with --reindex")
        try:
            counts = reindex(args.data_dir, args.category, args.sid_index_path, args.output_dir)
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
        print(json.dumps({"output_dir": args.output_dir, "reindexed_rows": counts}))
        return
    for flag in ("inter_dir", "category", "item_meta_path", "sid_index_path", "output_dir"):
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    preflight.writable_dir(args.output_dir, "output_dir")
    counts = convert(args.inter_dir, args.category, args.item_meta_path, args.sid_index_path, args.output_dir)
    print(json.dumps({"output_dir": args.output_dir, "rows": counts}))


if __name__ == "__main__":
    run(main, Args)
