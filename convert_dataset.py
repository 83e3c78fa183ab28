"""Interaction files + item.json + index.json -> MiniOneRec train/valid/test CSVs and info txt.

Input, as the Amazon preprocessing (minionerec/prep/amazon18_data_process.py) writes it:
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

import json
from dataclasses import dataclass

from minionerec.data.formats import DataError
from minionerec.data.inter import convert
from minionerec.run import preflight
from minionerec.run.cli import run


@dataclass
class Args:
    """Convert interaction files into MiniOneRec CSVs."""

    inter_dir: str = ""  # folder with <Category>.{train,valid,test}.inter
    category: str = ""  # file-name stem, any text (e.g. Industrial_and_Scientific)
    item_meta_path: str = ""  # item.json
    sid_index_path: str = ""  # index.json
    output_dir: str = ""  # MiniOneRec layout is written here
    reindex: bool = False  # instead: rewrite the CSVs of --data_dir with --sid_index_path (minionerec/rq/reindex.py)
    data_dir: str = ""  # --reindex only: an existing MiniOneRec dataset (train/valid/test/info/index)
    allow_repeated_rows: bool = False  # keep .inter rows that repeat an earlier row exactly (refused by default)


def main(args: Args) -> None:
    if args.reindex:  # same rows, new SIDs; info txt regenerated
        from minionerec.rq.reindex import reindex

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
    counts = convert(args.inter_dir, args.category, args.item_meta_path, args.sid_index_path, args.output_dir,
                     args.allow_repeated_rows)
    print(json.dumps({"output_dir": args.output_dir, "rows": counts}))


if __name__ == "__main__":
    run(main, Args)
