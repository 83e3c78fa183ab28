"""Rewrite an existing MiniOneRec dataset with a new index.json: same rows, new SIDs.

Reads `<data_dir>/{train,valid,test}/<Category>*.csv` and `<data_dir>/index/<Category>.item.json`,
replaces `history_item_sid` / `item_sid` from the new index by item id (titles, ids and row order are
untouched), regenerates `info/<Category>*.txt`, and copies the new index.json and item.json into
`<output_dir>/index/`. File names are kept (e.g. `Industrial_and_Scientific_5_2016-10-2018-11.csv`).
Every item id of every split must be in the new index; all is checked before anything is written. The writes hold
the lock of every output file (minionerec.run.file_lock): a second reindex or a minionerec.rq.add_items on this dataset's
index meanwhile is refused. Used by `convert_dataset.py --reindex true`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from minionerec.run.atomic import atomic_path
from minionerec.run.file_lock import locked
from minionerec.data.formats import (DataError, find_split, load_item_meta, load_sid_index, load_split, sid_string,
                             write_info, write_split)

SPLITS = ("train", "valid", "test")


def _new_sids(df, index: dict, path):
    """(history SIDs per row, target SID per row) from the new index; DataError names the row."""
    history, target = [], []
    for row_number, (hist_ids, item_id) in enumerate(zip(df["history_item_id"], df["item_id"]), start=2):
        missing = [i for i in [*hist_ids, item_id] if i not in index]
        if missing:
            raise DataError(f"{path}: row {row_number}: item {missing[0]} is not in the new index")
        history.append([sid_string(index[i]) for i in hist_ids])
        target.append(sid_string(index[item_id]))
    return history, target


def reindex(data_dir, category: str, sid_index_path, output_dir) -> dict[str, int]:
    """Returns rows per split; output_dir may equal data_dir (files are rewritten in place)."""
    data_dir, out = Path(data_dir), Path(output_dir)
    index = load_sid_index(sid_index_path)
    if len({sid_string(s) for s in index.values()}) != len(index):
        raise DataError(f"{sid_index_path}: two items share a SID; run minionerec/rq/ with collision handling")
    meta_path = data_dir / "index" / f"{category}.item.json"
    meta = load_item_meta(meta_path)
    frames = {}
    for split in SPLITS:
        path = find_split(data_dir, split, category)
        df = load_split(path)
        df["history_item_sid"], df["item_sid"] = _new_sids(df, index, path)
        frames[split] = (path.name, df)
    info_names = [p.name for p in sorted((data_dir / "info").glob(f"{category}*.txt"))] or [f"{category}.txt"]
    missing_meta = [i for i in index if i not in meta]
    if missing_meta:
        raise DataError(f"{meta_path}: item {missing_meta[0]} of the new index has no title")
    copies = {out / "index" / f"{category}.index.json": Path(sid_index_path),
              out / "index" / f"{category}.item.json": meta_path}
    splits = {out / split / name: df for split, (name, df) in frames.items()}
    infos = [out / "info" / name for name in info_names]
    for path in [*splits, *infos, *copies]:
        path.parent.mkdir(parents=True, exist_ok=True)
    with locked(*splits, *infos, *copies):  # one writer per dataset: never one run's train next to another's test
        for path, df in splits.items():
            write_split(df, path)
        for path in infos:
            write_info(index, meta, path)
        for dst, src in copies.items():
            if src.resolve() != dst.resolve():
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
    return {split: len(df) for split, (_, df) in frames.items()}
