"""Print the rq report table (collisions, items per first-level code, codes used and usage entropy per level) for an
existing index.json, or with --json the same figures as one JSON object (minionerec.rq.index.sid_stats).

    python -m minionerec.rq.report --index_path ../shared/data/Amazon/index/Industrial_and_Scientific.index.json \
        --codebook_size 256 [--json true]
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from minionerec.run.cli import run
from minionerec.data.formats import DataError
from minionerec.rq.common import parse_sizes
from minionerec.rq.index import load_index_codes, report, sid_stats


@dataclass
class Args:
    """Report collisions and per-level code usage of an index.json."""

    index_path: str = ""  # <Category>.index.json
    codebook_size: str = ""  # per-level sizes for the used% / max-entropy columns ("" = largest code + 1)
    name: str = ""  # table title ("" = the file name)
    json: bool = False  # print minionerec.rq.index.sid_stats as one JSON object instead of the table


def main(args: Args) -> str:
    if not args.index_path:
        raise SystemExit("error: --index_path is required")
    try:
        _, codes = load_index_codes(args.index_path)
    except ValueError as e:  # a DataError names the file already
        raise SystemExit(f"error: {e}" if isinstance(e, DataError) else f"error: {args.index_path}: {e}") from None
    sizes = parse_sizes(args.codebook_size, codes.shape[1]) if args.codebook_size != "" else None
    # An existing index has no "before": passing the same array prints one collision count.
    text = json.dumps(sid_stats(codes, sizes)) if args.json else report(args.name or Path(args.index_path).name,
                                                                        codes, codes, sizes)
    print(text)
    return text


if __name__ == "__main__":
    run(main, Args)
