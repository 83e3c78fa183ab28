"""Compare two quality-bench runs trained with the same seeds: B - A per dataset, method and split, paired over
seeds and users.

    python -m bench.compare_seeds --a bench/out/run_a --b bench/out/run_b [--metric NDCG --k 10]
    python -m bench.compare_seeds --a out/a_s1,out/a_s2 --b out/b_s1,out/b_s2   # one run per seed

Each run is a quality-bench output directory (one dataset, or one subdirectory per dataset), or several joined
with commas, which are read as one run: a 2-core box trains one seed per bench call, two calls at a time. For every
seed both runs trained, the per-user difference of their predictions on the same rows (minionerec.ranking.paired);
then minionerec.ranking.paired.over_seeds says whether the mean difference exceeds both the run-to-run (seed) noise
and the per-user noise. Rows scored must be the same users (the bench's fixed sample), matched by item ids, so two
runs on different SID indexes of a dataset (bench --sids) pair too; seeds only one run has are left out and named.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Args:
    """B - A for two quality-bench runs, paired over their common seeds and users."""

    a: str = ""  # bench output directory (results.json inside), or several joined with commas: one run
    b: str = ""  # the other one, same datasets and rows
    metric: str = "NDCG"  # NDCG | HR
    k: int = 10  # cutoff: compare metric@k (the top k of each prediction list)
    by: str = "sid"  # sid | item: score each run's ranked SIDs against the target SID, or as items (bench.shared_sids)
    output_json: str = ""  # also write the comparison here


def load_runs(paths: str, name: str) -> dict[str, dict]:
    """{category: {"seeds", "data"} of results.json} from one bench output directory or several joined with commas,
    whose seeds are merged per dataset (a seed trained in two of them is an error: which one counts?); "data" is the
    dataset's files as the first directory names them."""
    merged: dict[str, dict] = {}
    for path in paths.split(","):
        results = Path(path) / "results.json"
        if not results.is_file():
            raise SystemExit(f"error: --{name} {path}: no results.json (a quality-bench output directory)")
        data = json.loads(results.read_text())
        for category, run in ({data["category"]: data} if "category" in data else data).items():
            seeds = merged.setdefault(category, {"seeds": {}, "data": run.get("data")})["seeds"]  # data: the first
            if twice := sorted(seeds.keys() & run["seeds"].keys()):
                raise SystemExit(f"error: --{name}: {category} seed {twice[0]} is in two of its directories "
                                 f"({paths})")
            seeds.update(run["seeds"])
    return merged


def compare_runs(a: dict[str, dict], b: dict[str, dict], metric: str, k: int, by: str = "sid") -> dict:
    """{category: {method: {split: over_seeds(...)}}} over the seeds both runs trained. by="item" writes each run's
    ranked SIDs as items of its own index (an index that gives one SID to several items gains nothing from it)."""
    from minionerec.ranking.paired import check_same_rows, load_predictions, over_seeds, paired_difference
    from minionerec.ranking.shared_sids import item_of_sid, rows_by_item, sid_strings

    out = {}
    for category in sorted(set(a) & set(b)):
        seeds = [s for s in a[category]["seeds"] if s in b[category]["seeds"]]
        if not seeds:
            continue
        out[category] = {}
        first_a = a[category]["seeds"][seeds[0]]
        item_of = {side: item_of_sid(sid_strings(run["data"]["index"]), run["data"]["train"])
                   for side, run in (("a", a[category]), ("b", b[category]))} if by == "item" else {}
        # the methods every common seed of both has (a seed run with --stages sft has no SFT+RL)
        every = [r["seeds"][seed]["predictions"] for r in (a[category], b[category]) for seed in seeds]
        for method in (m for m in first_a["predictions"] if all(m in predictions for predictions in every)):
            out[category][method] = {}
            for split in first_a["predictions"][method]:
                per_seed = []
                for seed in seeds:
                    pa = load_predictions(a[category]["seeds"][seed]["predictions"][method][split])
                    pb = load_predictions(b[category]["seeds"][seed]["predictions"][method][split])
                    check_same_rows(pa, pb)
                    if item_of:
                        pa, pb = rows_by_item(pa, item_of["a"]), rows_by_item(pb, item_of["b"])
                    per_seed.append(paired_difference(pa, pb, metric, k))
                out[category][method][split] = {**over_seeds(per_seed), "seed_ids": seeds,
                                                "a": sum(d["a"] for d in per_seed) / len(seeds),
                                                "b": sum(d["b"] for d in per_seed) / len(seeds)}
    return out


def main(args: Args) -> dict:
    from minionerec.ranking.paired import format_over_seeds

    if args.metric not in ("NDCG", "HR") or args.k < 1 or args.by not in ("sid", "item"):
        raise SystemExit(f"error: --metric must be NDCG or HR, --k >= 1 and --by sid or item, got {args.metric!r}, "
                         f"{args.k}, {args.by!r}")
    result = compare_runs(load_runs(args.a, "a"), load_runs(args.b, "b"), args.metric, args.k, args.by)
    if not result:
        raise SystemExit("error: --a and --b share no dataset trained with a common seed")
    for category, methods in result.items():
        for method, splits in methods.items():
            for split, d in splits.items():
                print(f"{category} {method} {split} {args.metric}@{args.k} by {args.by}: A {d['a']:.4f} B {d['b']:.4f} "
                      f"seeds {'+'.join(d['seed_ids'])}; B - A {format_over_seeds(d)}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from minionerec.run.cli import run

    run(main, Args)
