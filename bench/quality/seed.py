"""One training seed of one dataset: SASRec, the base model, then each arm (SFT, its evaluation, guarded GRPO, its
evaluation), its tables and files.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from bench.quality.aggregate import paired_ndcg10, summarise
from bench.quality.plan import MAIN, SAMPLE_SEED, Arm, Args, Plan, arms, method_order
from bench.quality.report import plot, print_summary, print_tables, write_curves
from bench.quality.stages import (Stage, base_model, final_is_sft_weights, prediction_paths, run_eval, run_rl,
                                  run_sasrec, run_sft)


def run_seed(args: Args, plan: Plan, paths: dict, category: str, splits: dict, popularity: dict, out_dir: Path,
             seed: int, trained_sft: dict | None = None) -> dict:
    """One training seed: SASRec, the base model, then each arm (SFT, evaluation, guarded GRPO, evaluation). Writes
    out_dir's files; the main arm's curves and guard where a single-arm run has them, the scratch arm's under
    "scratch". `trained_sft` (the SID choice's run of this seed, on these SIDs): the main arm's SFT, not retrained."""
    from transformers import set_seed

    set_seed(seed)  # each seed starts from the same state, as if run alone
    out_dir.mkdir(parents=True, exist_ok=True)
    Stage.timings = {}
    start = time.perf_counter()
    print(f"\n[quality] ##### {category}, seed {seed} -> {out_dir}", flush=True)
    metrics, info = {"popularity": popularity}, {}
    if args.stages == "all":
        with Stage("SASRec"):
            metrics["SASRec"], metrics["SASRec by SID"], info["SASRec"] = run_sasrec(plan, paths, splits, out_dir / "sasrec", seed)
    base = base_model(plan, paths, out_dir, seed)
    outcomes, predictions = {}, {}
    for arm in arms(plan):
        outcomes[arm] = run_arm(args, plan, arm, paths, category, splits, metrics, info, base, arm.dir(out_dir), seed,
                                None if arm.from_scratch else trained_sft)
        predictions.update(outcomes[arm].pop("predictions"))
        write_curves(outcomes[arm]["curves"], arm.dir(out_dir), f"{category}: reference curves ({args.preset} preset, "
                     f"seed {seed}{', scratch arm' if arm.from_scratch else ''})")
    main_arm = outcomes.pop(MAIN)
    metrics = {m: metrics[m] for m in method_order(plan) if m in metrics}
    result = {"seed": seed, "metrics": metrics, "curves": main_arm["curves"], "predictions": predictions,
              "sft_dir": main_arm["sft_dir"],
              **{arm.name: outcome for arm, outcome in outcomes.items()}}  # the scratch arm's curves, guard, RL - SFT
    if args.stages == "all":
        result.update(summary=summarise(metrics, main_arm["rl_minus_sft_paired"]), sasrec=info["SASRec"],
                      guard=main_arm["guard"])
    total = time.perf_counter() - start
    result.update(timings_s=Stage.timings, total_s=round(total, 1))
    print(f"\n[quality] preset={args.preset} category={category} seed={seed} stages={args.stages} "
          f"prompt_style={plan.sft.prompt_style} total {total / 60:.1f} min; stage seconds {json.dumps(Stage.timings)}")
    print_tables(metrics)
    if args.stages == "all":
        print_summary(result)
    plot(metrics, out_dir / "quality.png", f"{category} ({args.preset} preset, seed {seed})")
    return result


def run_arm(args: Args, plan: Plan, arm: Arm, paths: dict, category: str, splits: dict, metrics: dict, info: dict,
            base: Path, out_dir: Path, seed: int, trained_sft: dict | None = None) -> dict:
    """One arm in out_dir: SFT from `base` (the scratch arm: its architecture, random weights seeded by `seed`; with
    `trained_sft`, that run instead: the same training, done once), its evaluation, and with --stages all guarded
    GRPO and its evaluation; every other flag is the recipe's, so the arms differ in the starting weights only. Adds
    the arm's methods to `metrics`; returns its curves, prediction paths and SFT directory, with RL the guard's
    choice and RL - SFT paired over users."""
    if arm.from_scratch:
        plan = dataclasses.replace(plan, sft=dataclasses.replace(plan.sft, train_from_scratch=True))
    sft_method, rl_method = arm.methods
    curves = {}
    if trained_sft:
        print(f"[quality] SFT: the SID choice's run of seed {seed}, {trained_sft['dir']} (same seed, steps and rows)",
              flush=True)
        curves["SFT"], sft_run = trained_sft["curves"], Path(trained_sft["dir"])
    else:
        with Stage(arm.stage("SFT")):
            curves["SFT"], sft_run = run_sft(plan, paths, category, base, out_dir, seed), out_dir / "sft"
    sft_dir = str(sft_run / "final_checkpoint")
    with Stage(arm.stage("evaluate SFT (valid, test)")):
        metrics[sft_method] = run_eval(plan, sft_dir, paths, splits, out_dir / "eval_sft", SAMPLE_SEED)
    out = {"curves": curves, "sft_dir": str(sft_run),
           "predictions": {sft_method: prediction_paths(out_dir / "eval_sft", splits)}}
    if args.stages == "all":
        rl_result = run_rl_stages(plan, arm, paths, category, splits, metrics, curves, info, sft_dir, out_dir, seed)
        out["predictions"][rl_method] = rl_result.pop("predictions")
        out.update(rl_result)
    return out


def run_rl_stages(plan: Plan, arm: Arm, paths: dict, category: str, splits: dict, metrics: dict, curves: dict,
                  info: dict, sft_dir: str, out_dir: Path, seed: int) -> dict:
    """GRPO from the SFT checkpoint (guarded when keep_best), then its final checkpoint scored on valid and test."""
    sft_method, rl_method = arm.methods
    # sasrec.py's metrics.json names its checkpoint "cf_path"
    sasrec_path = info["SASRec"]["cf_path"] if "sasrec" in plan.rl.reward_type.split("+") else ""
    run_dir = out_dir / "rl"
    with Stage(arm.stage("RL (GRPO)")):
        curves["RL"], guard = run_rl(plan, paths, category, sft_dir, run_dir, seed, sasrec_path, splits["valid"])
    if final_is_sft_weights(guard):  # final_checkpoint is a copy of the SFT weights: SFT's scores are its scores
        rl_eval_dir, metrics[rl_method] = out_dir / "eval_sft", metrics[sft_method]
    else:
        rl_eval_dir = out_dir / "eval_rl"
        with Stage(arm.stage("evaluate SFT+RL (valid, test)")):
            metrics[rl_method] = run_eval(plan, str(run_dir / "final_checkpoint"), paths, splits, rl_eval_dir,
                                          SAMPLE_SEED)
    sft_predictions, rl_predictions = prediction_paths(out_dir / "eval_sft", splits), prediction_paths(rl_eval_dir, splits)
    paired = {split: paired_ndcg10(sft_predictions[split], rl_predictions[split]) for split in splits}
    return {"guard": guard, "rl_minus_sft_paired": paired, "predictions": rl_predictions}
