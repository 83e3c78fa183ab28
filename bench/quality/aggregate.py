"""The statistics: one seed's summary (ratios to SASRec, RL - SFT, the targets) and every figure over seeds (mean,
spread, differences paired over seeds and users); `scored_rows` also serves bench/shared_sids.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.quality.plan import ARM_PAIRS, MAIN, METHODS, SCRATCH


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def paired_ndcg10(pred_a: str, pred_b: str) -> dict:
    """Per-user NDCG@10 of method b minus method a (same rows): mean, standard error and a z score
    (minionerec/ranking/paired.py, also `python compare.py`). The two LLM rows share every user, so their
    difference is far less noisy than two independent means."""
    from minionerec.ranking.paired import check_same_rows, load_predictions, paired_difference

    a, b = load_predictions(pred_a), load_predictions(pred_b)
    check_same_rows(a, b)
    return paired_difference(a, b, "NDCG", 10)


def summarise(metrics: dict, paired: dict) -> dict:
    """Ratios on NDCG@10 and which of the issue's targets hold. The MiniOneRec row of the
    MiniOneRec/SASRec ratio is chosen on valid, then read on test."""
    n = {m: {s: metrics[m][s]["NDCG@10"] for s in ("valid", "test")} for m in METHODS}
    best_llm = max(("MiniOneRec SFT", "MiniOneRec SFT+RL"), key=lambda m: n[m]["valid"])
    out = {
        "ndcg10": n,
        "best_minionerec_by_valid": best_llm,
        "minionerec_over_sasrec_test": ratio(n[best_llm]["test"], n["SASRec"]["test"]),
        "minionerec_over_sasrec_valid": ratio(n[best_llm]["valid"], n["SASRec"]["valid"]),
        "minionerec_over_sasrec_by_sid_test": ratio(n[best_llm]["test"], n["SASRec by SID"]["test"]),
        "minionerec_over_sasrec_by_sid_valid": ratio(n[best_llm]["valid"], n["SASRec by SID"]["valid"]),
        "rl_over_sft_test": ratio(n["MiniOneRec SFT+RL"]["test"], n["MiniOneRec SFT"]["test"]),
        "rl_over_sft_valid": ratio(n["MiniOneRec SFT+RL"]["valid"], n["MiniOneRec SFT"]["valid"]),
        "rl_minus_sft_paired": paired,
    }
    out["targets"] = {
        "MiniOneRec NDCG@10 >= 1.2 x SASRec (test)": bool(n[best_llm]["test"] >= 1.2 * n["SASRec"]["test"]),
        "MiniOneRec NDCG@10 >= 1.2 x SASRec by SID (test; both scored by SID)":
            bool(n[best_llm]["test"] >= 1.2 * n["SASRec by SID"]["test"]),
        # the guard's promise; on test the paired difference and its SE (printed) say whether RL helped
        "SFT+RL NDCG@10 >= SFT (valid)": bool(n["MiniOneRec SFT+RL"]["valid"] >= n["MiniOneRec SFT"]["valid"]),
    }
    return out


def over_seeds_summary(runs: dict[int, dict]) -> dict:
    """NDCG@10 and HR@10 of every method and split across seeds (per seed, mean, spread = max - min), the RL - SFT
    difference paired over seeds and users, SFT+RL / SASRec; with the scratch arm, ARM_PAIRS likewise."""
    from minionerec.ranking.paired import over_seeds

    first = next(iter(runs.values()))
    out = {key: {method: by_seed(runs, method, metric) for method in first["metrics"]}
           for key, metric in (("ndcg10", "NDCG@10"), ("hr10", "HR@10"))}
    if "summary" in first:
        out["rl_minus_sft"] = {split: over_seeds([r["summary"]["rl_minus_sft_paired"][split] for r in runs.values()])
                               for split in ("valid", "test")}
        out["minionerec_over_sasrec"] = over_sasrec(out["ndcg10"], MAIN.methods[1])
        out["minionerec_over_sasrec_by_sid"] = over_sasrec(out["ndcg10"], MAIN.methods[1], "SASRec by SID")
    if SCRATCH.methods[0] in first["metrics"]:
        out["pretrained_vs_scratch"] = {label: {"a": a, "b": b, **{
            split: over_seeds([paired_methods(r, a, b, split) for r in runs.values()]) for split in ("valid", "test")}}
            for label, a, b in ARM_PAIRS if a in first["metrics"] and b in first["metrics"]}
        if "summary" in first:
            out["scratch_over_sasrec"] = over_sasrec(out["ndcg10"], SCRATCH.methods[1])
    return out


def by_seed(runs: dict[int, dict], method: str, metric: str) -> dict:
    """{split: per-seed values, mean, spread = max - min, spread / mean} of one method's metric."""
    out = {}
    for split in ("valid", "test"):
        values = [r["metrics"][method][split][metric] for r in runs.values()]
        mean = sum(values) / len(values)
        out[split] = {"per_seed": values, "mean": mean, "spread": max(values) - min(values),
                      "spread_over_mean": (max(values) - min(values)) / mean if mean else None}
    return out


def over_sasrec(ndcg10: dict, method: str, baseline: str = "SASRec") -> dict:
    """{split: method's NDCG@10 / the baseline's (SASRec or SASRec by SID), means over seeds}."""
    return {split: ratio(ndcg10[method][split]["mean"], ndcg10[baseline][split]["mean"]) for split in ("valid", "test")}


def scored_rows(run: dict, method: str, split: str) -> list[dict]:
    """One seed's ranked lists of `method` on a split, as paired_difference scores them (`predict` against
    `item_sid`), with `item_id` to pair rows by: evaluate.py's rows as written; SASRec's ranked item ids against the
    target item id, as its table figure is scored (a few items share a SID)."""
    from minionerec.ranking.paired import load_predictions

    if method == "SASRec":
        rows = json.loads(Path(run["sasrec"]["predictions"][split]).read_text())
        return [{"item_sid": row["item_id"], **row} for row in rows]
    return load_predictions(run["predictions"][method][split])


def paired_methods(run: dict, a: str, b: str, split: str) -> dict:
    """Per-user NDCG@10 of method b minus method a on one seed's rows of a split (minionerec.ranking.paired)."""
    from minionerec.ranking.paired import paired_difference

    rows_a, rows_b = scored_rows(run, a, split), scored_rows(run, b, split)
    if [str(row["item_id"]) for row in rows_a] != [str(row["item_id"]) for row in rows_b]:
        raise SystemExit(f"error: {a} and {b} scored different {split} rows: no paired difference")
    return paired_difference(rows_a, rows_b, "NDCG", 10)
