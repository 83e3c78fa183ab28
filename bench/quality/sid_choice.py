"""The SID stage's choice (bench/sids.py builds the candidates): with several, each trains SFT with the first seed
and is scored on the valid sample, and the best valid NDCG@10 by item is the dataset's SIDs.
"""
from __future__ import annotations

from pathlib import Path

from bench import sids
from bench.quality.plan import SAMPLE_SEED, Args, Plan, data_paths
from bench.quality.stages import Stage, base_model, prediction_paths, run_eval, run_sft, sample_split


def dataset_sids(args: Args, plan: Plan, sid_plan: sids.SidPlan, category: str,
                 out_dir: Path) -> tuple[str, dict | None, dict | None]:
    """The SID stage (bench/sids.py): the data directory the dataset's bench runs on, what results.json records
    of the choice (None for --sids release: the dataset as given, nothing built, nothing printed), and with
    several candidates the chosen one's SFT run ({"dir", "curves"}: the first seed's SFT, else None). With
    several candidates (auto), each trains SFT with the first seed and is scored on the valid sample; the best
    valid NDCG@10 by item wins (a SID shared by several items would otherwise score as a free hit), the first
    listed on a tie."""
    if sid_plan.mode == sids.RELEASE:
        return args.data_dir, None, None
    with Stage("SIDs: build candidates"):
        built, note = sids.prepare(sid_plan, args.data_dir, category, out_dir / "sids")
    if note:
        print(f"[quality] {category}: {note}", flush=True)
    scores, runs = score_sid_candidates(plan, category, built, out_dir / "sids") if len(built) > 1 else ({}, {})
    chosen = max(built, key=lambda b: scores[b.name]["ndcg10_by_item"]) if scores else built[0]
    users = f", {scores[chosen.name]['valid']['users']} valid users" if scores else ""
    title = f"{category}: SID candidates" + (f" (SFT seed {plan.seeds[0]}{users}; the best valid NDCG@10 by item is kept)"
                                             if scores else "")
    print("\n" + sids.format_table(title, built, scores, chosen.name), flush=True)
    record = {"mode": sid_plan.mode, "asked": [c.name for c in sid_plan.candidates], "note": note,
              "shape": args.sid_shape, "chosen": chosen.name, "data_dir": chosen.data_dir,
              "candidates": {b.name: {"data_dir": b.data_dir, "stats": b.stats, **scores.get(b.name, {})}
                             for b in built}}
    if scores:
        record["selection_seed"] = plan.seeds[0]
    return chosen.data_dir, record, runs.get(chosen.name)


def score_sid_candidates(plan: Plan, category: str, built: list[sids.Built],
                         sid_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per candidate: SFT with the first seed on its data, as the bench trains it (a tiny model built on its index:
    the tokenizer holds the SIDs), scored on the valid sample by SID and by item (each ranked SID written as an item
    of its index: minionerec.ranking.shared_sids); with the release among them, each other candidate's per-user
    NDCG@10 by item minus the release's, paired by item id (the SIDs differ, the rows do not). Returns the scores
    and each candidate's SFT run ({"dir", "curves"})."""
    from minionerec.ranking.metrics import compute_metrics
    from minionerec.ranking.paired import check_same_rows, load_predictions, paired_difference
    from minionerec.ranking.shared_sids import item_of_sid, rows_by_item, sid_strings

    seed = plan.seeds[0]
    scores, by_item, runs = {}, {}, {}
    for b in built:
        run_dir = sid_dir / b.name / f"sft_seed_{seed}"
        scores[b.name], curves = sft_valid(plan, category, b.name, b.data_dir, run_dir, seed)
        runs[b.name] = {"dir": run_dir / "sft", "curves": curves}
        paths = data_paths(b.data_dir, category)
        by_item[b.name] = rows_by_item(load_predictions(scores[b.name]["predictions"]),
                                       item_of_sid(sid_strings(paths["index"]), paths["train"]))
        scores[b.name]["ndcg10_by_item"] = compute_metrics([r["predict"] for r in by_item[b.name]],
                                                           [r["item_sid"] for r in by_item[b.name]], (10,))["NDCG@10"]
    for name, score in scores.items():
        if sids.RELEASE in scores and name != sids.RELEASE:
            check_same_rows(by_item[sids.RELEASE], by_item[name], sids.RELEASE, name)
            score["vs_release"] = paired_difference(by_item[sids.RELEASE], by_item[name], "NDCG", 10)
    return scores, runs


def sft_valid(plan: Plan, category: str, name: str, data_dir: str, out_dir: Path, seed: int) -> tuple[dict, dict]:
    """One candidate's SFT run (the same steps as run_seed's for this seed: seeded, then the base model, then SFT)
    and its evaluation on the valid sample only (the choice never sees test): {valid metrics, NDCG@10,
    predictions}, and the SFT curves."""
    from transformers import set_seed

    paths = data_paths(data_dir, category)
    valid = {"valid": sample_split(paths["valid"], plan.eval_sample, SAMPLE_SEED, out_dir / "samples" / "valid.csv")}
    set_seed(seed)
    base = base_model(plan, paths, out_dir, seed)
    with Stage(f"SIDs {name}: SFT (seed {seed})"):
        curves = run_sft(plan, paths, category, base, out_dir, seed)
    with Stage(f"SIDs {name}: evaluate SFT (valid)"):
        metrics = run_eval(plan, str(out_dir / "sft" / "final_checkpoint"), paths, valid, out_dir / "eval_sft",
                           SAMPLE_SEED)["valid"]
    return {"valid": metrics, "ndcg10": metrics["NDCG@10"],
            "predictions": prediction_paths(out_dir / "eval_sft", valid)["valid"]}, curves
