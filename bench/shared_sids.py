"""How items that share a SID move a quality-bench comparison: NDCG@k of every method scored by SID and by item.

    python -m bench.shared_sids --runs bench/out/quality_cpu            # one bench output directory
    python -m bench.shared_sids --runs out/ind_s42,out/ind_s1            # one run per seed, read as one run

By SID is how MiniOneRec is scored (and upstream's protocol): a SID shared by several items is one target. By item
is how SASRec is scored. To put both on one footing this prints, per dataset, seed and split, each method both ways:
MiniOneRec's SIDs written as items (each SID as the item of its group most often a train target, as a server must
show one: minionerec.ranking.shared_sids), SASRec's items written as SIDs (the quality bench's "SASRec by SID"); then
the means over seeds, SFT+RL / SASRec both ways, and SFT+RL - SASRec per user both ways, paired over seeds and users
(minionerec.ranking.paired.over_seeds). It reads the runs' predictions only: nothing is retrained.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.compare_seeds import load_runs
from minionerec.ranking.paired import format_over_seeds, over_seeds

LLM_METHODS = ("MiniOneRec SFT", "MiniOneRec SFT+RL")


@dataclass
class Args:
    """NDCG@k by SID and by item for every method of quality-bench runs."""

    runs: str = ""  # bench output directory (results.json inside), or several joined with commas: one run
    k: int = 10  # cutoff: NDCG@k
    output_json: str = ""  # also write the figures here


def dataset_tables(run: dict, k: int) -> dict:
    """{"shared": ..., "seeds": {seed: {split: {method: {"sid": NDCG@k, "item": NDCG@k}}}},
    "paired": {split: {"sid" | "item": [per seed: SFT+RL - SASRec per user, paired_difference]}}} for one dataset."""
    from bench.quality.aggregate import scored_rows
    from minionerec.ranking.metrics import compute_metrics
    from minionerec.ranking.paired import load_predictions, paired_difference
    from minionerec.ranking.shared_sids import as_items, as_sids, item_of_sid, rows_by_item, sid_groups, sid_strings

    first = next(iter(run["seeds"].values()))
    data = run["data"]
    sid_of = sid_strings(data["index"])
    groups = sid_groups(sid_of)
    item_of = item_of_sid(sid_of, data["train"])
    shared = {sid for sid, items in groups.items() if len(items) > 1}
    ndcg = lambda ranked, targets: compute_metrics([r[:k] for r in ranked], targets, (k,))[f"NDCG@{k}"]  # noqa: E731
    out = {"shared": {"sids": len(shared), "items": sum(len(groups[s]) for s in shared)}, "seeds": {}, "paired": {}}
    for seed, r in run["seeds"].items():
        out["seeds"][seed] = {}
        for split in first["predictions"][LLM_METHODS[0]]:
            rows = {m: load_predictions(r["predictions"][m][split]) for m in LLM_METHODS if m in r["predictions"]}
            targets = next(iter(rows.values()))
            item_ids, sids = [str(t["item_id"]) for t in targets], [t["item_sid"] for t in targets]
            out["shared"][split] = sum(s in shared for s in sids) / len(sids)  # share of targets with a shared SID
            table = {m: {"sid": ndcg([p["predict"] for p in ps], sids),
                         "item": ndcg(as_items([p["predict"] for p in ps], item_of), item_ids)}
                     for m, ps in rows.items()}
            if "sasrec" in r:
                sasrec_rows = scored_rows(r, "SASRec", split)
                if [str(p["item_id"]) for p in sasrec_rows] != item_ids:  # scored and paired row by row
                    raise SystemExit(f"error: seed {seed}: SASRec and MiniOneRec scored different {split} rows")
                ranked = [[str(i) for i in p["predict"]] for p in sasrec_rows]
                table = {"SASRec": {"sid": ndcg(as_sids(ranked, sid_of), sids), "item": ndcg(ranked, item_ids)}, **table}
                if LLM_METHODS[1] in rows:  # per user, both ways: the LLM's rows as written / by item, SASRec's as SIDs / items
                    llm = rows[LLM_METHODS[1]]
                    sasrec = {"sid": [{"predict": p, "item_sid": t} for p, t in zip(as_sids(ranked, sid_of), sids)],
                              "item": [{"predict": p, "item_sid": t} for p, t in zip(ranked, item_ids)]}
                    ours = {"sid": llm, "item": rows_by_item(llm, item_of)}
                    for way in ("sid", "item"):
                        out["paired"].setdefault(split, {}).setdefault(way, []).append(
                            paired_difference(sasrec[way], ours[way], "NDCG", k))
            out["seeds"][seed][split] = table
    return out


def main(args: Args) -> dict:
    if not args.runs or args.k < 1:
        raise SystemExit(f"error: --runs must name bench output directories and --k >= 1, got {args.runs!r}, {args.k}")
    out = {}
    for category, run in load_runs(args.runs, "runs").items():
        out[category] = t = dataset_tables(run, args.k)
        seeds = list(t["seeds"])
        splits = list(t["seeds"][seeds[0]])
        print(f"\n== {category}: {t['shared']['sids']} SIDs shared by {t['shared']['items']} items; targets with a "
              "shared SID: " + ", ".join(f"{s} {t['shared'][s]:.1%}" for s in splits))
        print(f"{'split':5s} {'method':18s} " + " ".join(f"{'seed ' + s:>15s}" for s in seeds)
              + f" {'mean':>15s}    (NDCG@{args.k} by SID / by item)")
        for split in splits:
            for method in t["seeds"][seeds[0]][split]:
                cells = [t["seeds"][s][split][method] for s in seeds]
                mean = {w: sum(c[w] for c in cells) / len(cells) for w in ("sid", "item")}
                t.setdefault("mean", {}).setdefault(split, {})[method] = mean
                print(f"{split:5s} {method:18s} " + " ".join(f"{c['sid']:.4f} / {c['item']:.4f}" for c in [*cells, mean]))
            means = t["mean"][split]
            if "SASRec" in means and LLM_METHODS[1] in means:
                ratios = {w: means[LLM_METHODS[1]][w] / means["SASRec"][w] for w in ("sid", "item")}
                print(f"{split:5s} SFT+RL / SASRec, means over seeds: by SID {ratios['sid']:.3f}, "
                      f"by item {ratios['item']:.3f}")
                for way, label in (("sid", "by SID"), ("item", "by item")):
                    t["paired"][split][way] = pooled = over_seeds(t["paired"][split][way])
                    print(f"{split:5s} SFT+RL - SASRec per user, {label}: {format_over_seeds(pooled)}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    from minionerec.run.cli import run

    run(main, Args)
