"""Paired comparison of two evaluate.py runs on the same users: per metric, B - A with its paired SE.

    python compare.py --a output/eval_sft/predictions.json --b output/eval_rl/predictions.json
    python compare.py --a A.json --b B.json --ks 1+5+10 --output_json diff.json

A difference within about two standard errors (|z| < 2) is noise at this sample size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minionerec.run import preflight
from minionerec.run.atomic import atomic_write_text
from minionerec.run.cli import run
from minionerec.ranking.paired import check_same_rows, compare, format_comparison, load_predictions


@dataclass
class Args:
    """Per-user HR@K / NDCG@K differences between two predictions files of the same test rows."""

    a: str = ""  # predictions JSON of method A (the baseline), as evaluate.py writes it
    b: str = ""  # predictions JSON of method B, on the same rows
    ks: str = "1+5+10+20"  # "+"-joined K values (each at most the shorter prediction list)
    output_json: str = ""  # optional: the table as JSON (written atomically)


def main(args: Args) -> dict:
    if not args.a or not args.b:
        raise SystemExit("error: give both --a and --b (predictions JSONs of evaluate.py)")
    try:
        ks = [int(k) for k in str(args.ks).split("+")]
    except ValueError:
        raise SystemExit(f"error: --ks must be numbers joined by '+', e.g. 1+5+10, got {args.ks!r}") from None
    preflight.output_not_input(args.output_json, "output_json", {"a": args.a, "b": args.b})
    a, b = load_predictions(args.a), load_predictions(args.b)
    check_same_rows(a, b, Path(args.a).name, Path(args.b).name)
    shortest = min(len(row["predict"]) for row in a + b)
    if not ks or min(ks) < 1 or max(ks) > shortest:
        raise SystemExit(f"error: --ks {args.ks}: each K must be in 1..{shortest} (the shortest prediction list)")
    results = compare(a, b, ks)
    print(f"[compare] {len(a)} users; A = {args.a}; B = {args.b}")
    print(format_comparison(results, "A", "B"))
    if args.output_json:
        atomic_write_text(args.output_json, json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    run(main, Args)
