"""The orchestrator: main checks every flag and dataset before training, then runs each dataset (the SID stage,
popularity, every seed) and writes its results.json; several datasets end with the closing table.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from bench import sids
from bench.quality.aggregate import over_seeds_summary
from bench.quality.plan import PRESETS, ROOT, SAMPLE_SEED, Args, Plan, data_paths, resolve, sids_of
from bench.quality.report import print_datasets, print_plan, print_seed_tables
from bench.quality.seed import run_seed
from bench.quality.sid_choice import dataset_sids
from bench.quality.stages import Stage, run_popularity, sample_split


def main(args: Args) -> dict:
    """One dataset: its results.json dict. Several ("+"-joined --category): {category: results} plus a closing
    table of every dataset's NDCG@10 means over seeds."""
    plan = resolve(args)
    sid_plan = sids_of(args)
    categories = [c for c in args.category.split("+") if c]
    if not categories or len(set(categories)) != len(categories):
        raise SystemExit(f"error: --category must be '+'-joined distinct names, got {args.category!r}")
    for category in categories:  # every dataset's files exist before the first one starts training
        data_paths(args.data_dir, category)
    if plan.base_model and not Path(plan.base_model, "config.json").is_file():
        hint = " (make pretrained writes it)" if plan.base_model.endswith(PRESETS["gpu_pretrained"]["base_model"]) else ""
        raise SystemExit(f"error: base model {plan.base_model}: no model directory there{hint}; "
                         f"--base_model tiny builds a tiny one instead")
    out_root = Path(args.output_dir or ROOT / "bench" / "out" / f"quality_{args.preset}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)
    print_plan(args, plan, categories, out_root)
    results = {category: run_dataset(args, plan, sid_plan, category,
                                     out_root / category if len(categories) > 1 else out_root)
               for category in categories}
    if len(categories) == 1:
        return results[categories[0]]
    print_datasets(results, plan, args.preset)
    (out_root / "results.json").write_text(json.dumps(results, indent=1))
    return results


def run_dataset(args: Args, plan: Plan, sid_plan: sids.SidPlan, category: str, out_dir: Path) -> dict:
    """Every stage on one dataset, once per seed, on the SIDs the SID stage chose; prints the per-seed tables and
    writes results.json's dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"\n[quality] ##### {category} -> {out_dir}", flush=True)
    data_dir, sid_record, chosen_sft = dataset_sids(args, plan, sid_plan, category, out_dir)
    paths = data_paths(data_dir, category)
    splits = {s: sample_split(paths[s], plan.eval_sample, SAMPLE_SEED, out_dir / "samples" / f"{s}.csv")
              for s in ("valid", "test")}
    with Stage("popularity"):  # no training: the same for every seed
        popularity = run_popularity(paths, splits, plan.evaluate.num_beams)
    runs = {seed: run_seed(args, plan, paths, category, splits, popularity, out_dir / f"seed_{seed}", seed,
                           chosen_sft if seed == plan.seeds[0] else None)  # the choice trained the first seed
            for seed in plan.seeds}
    result = {"args": asdict(args), "category": category, "knobs": plan.record(), "data": paths,
              **({"sids": sid_record} if sid_record else {}), "samples": splits, "seeds": runs,
              "over_seeds": over_seeds_summary(runs), "total_s": round(time.perf_counter() - start, 1)}
    print(f"\n[quality] ##### {category}: {len(runs)} seeds, total {result['total_s'] / 60:.1f} min")
    print_seed_tables(result)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    return result
