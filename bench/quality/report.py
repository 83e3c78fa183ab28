"""The output: the printed tables (per seed, over seeds, the arms table, the closing table of several datasets) and
the files beside results.json (quality.png bars, curves.csv + curves.png reference curves).
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.quality.plan import KS, MAIN, SCRATCH, Args, Plan, method_order


def print_plan(args: Args, plan: Plan, categories: list[str], out_root: Path) -> None:
    """The run's opening lines: datasets, base model and arms, recipe, seeds, and each script's values other than its
    defaults (what the recipe and --set chose)."""
    changed = "\n".join(f"[quality]   {s}: {json.dumps(v)}" for s, v in plan.changed().items())
    print(f"[quality] preset={args.preset} data={args.data_dir} categories={categories} -> {out_root}\n"
          f"[quality] base model: {plan.base_model or 'a tiny model per seed (tiny section)'}"
          f"{' (random weights: sft.train_from_scratch)' if plan.base_model and plan.sft.train_from_scratch else ''}"
          f"{'; beside it the scratch arm: its architecture from random weights' if plan.scratch_arm else ''}\n"
          f"[quality] recipe {plan.recipe}, seeds {plan.seeds}, eval_sample {plan.eval_sample}; values other than "
          f"each script's defaults:\n{changed}", flush=True)


def print_tables(metrics: dict) -> None:
    from minionerec.ranking.metrics import format_table

    for split in ("valid", "test"):
        print(f"\n== {split} ({metrics['popularity'][split]['users']} users)")
        print(format_table({m: d[split] for m, d in metrics.items()}, KS))


def print_summary(result: dict) -> None:
    summary = result["summary"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"\nNDCG@10 ratios: MiniOneRec/SASRec test {fmt(summary['minionerec_over_sasrec_test'])} "
          f"(valid {fmt(summary['minionerec_over_sasrec_valid'])}); MiniOneRec/SASRec by SID test "
          f"{fmt(summary['minionerec_over_sasrec_by_sid_test'])} (valid {fmt(summary['minionerec_over_sasrec_by_sid_valid'])}); RL/SFT test {fmt(summary['rl_over_sft_test'])} "
          f"(valid {fmt(summary['rl_over_sft_valid'])})")
    print_rl(result["guard"], summary["rl_minus_sft_paired"])
    if SCRATCH.name in result:
        print_rl(result[SCRATCH.name]["guard"], result[SCRATCH.name]["rl_minus_sft_paired"], f"{SCRATCH.name}: ")
    for target, held in summary["targets"].items():
        print(f"target {'HOLDS' if held else 'FAILS'}: {target}")


def print_rl(guard: dict | None, rl_minus_sft: dict, prefix: str = "") -> None:
    """One arm's GRPO: the guard's valid NDCG@10 by step and choice, RL - SFT per user on each split."""
    if guard:
        print(f"{prefix}RL guard (valid NDCG@10 by step): " + ", ".join(f"{c['step']} {c[guard['metric']]:.4f}"
                                                                       for c in guard["curve"])
              + f" -> step {guard['chosen_step']} kept" + (" (the SFT weights)" if guard["chosen_step"] == 0 else ""))
    for split, d in rl_minus_sft.items():
        print(f"{prefix}RL - SFT per-user NDCG@10 on {split}: {d['mean']:+.4f} +/- {d['se']:.4f} (paired SE, "
              f"z {d['z']:+.1f}; {d['better']} users better, {d['worse']} worse)")


def print_seed_tables(result: dict) -> None:
    """NDCG@10 per seed, mean and spread for every method, valid then test (with the scratch arm: the arms table);
    the RL - SFT line over seeds and the SFT+RL / SASRec ratios."""
    from minionerec.ranking.paired import format_over_seeds

    seeds, agg = list(result["seeds"]), result["over_seeds"]
    if "pretrained_vs_scratch" in agg:
        print_arms_table(result)
    else:
        for split in ("valid", "test"):
            print(f"\n== NDCG@10 by seed, {split}")
            print(f"{'method':18s} " + " ".join(f"{'seed ' + str(s):>9s}" for s in seeds)
                  + f" {'mean':>8s} {'spread':>8s} {'spread/mean':>11s}")
            for method, by_split in agg["ndcg10"].items():
                d = by_split[split]
                rel = "n/a" if d["spread_over_mean"] is None else f"{d['spread_over_mean']:.1%}"
                print(f"{method:18s} " + " ".join(f"{v:9.4f}" for v in d["per_seed"])
                      + f" {d['mean']:8.4f} {d['spread']:8.4f} {rel:>11s}")
    if "rl_minus_sft" in agg:
        for split, d in agg["rl_minus_sft"].items():
            print(f"RL - SFT NDCG@10 on {split}, paired over seeds and users: {format_over_seeds(d)}")
        for method, key, baseline in ((SCRATCH.methods[1], "scratch_over_sasrec", "SASRec"),
                                      (MAIN.methods[1], "minionerec_over_sasrec", "SASRec"),
                                      (MAIN.methods[1], "minionerec_over_sasrec_by_sid", "SASRec by SID")):
            if key in agg:
                ratios = {split: "n/a" if r is None else f"{r:.3f}" for split, r in agg[key].items()}
                print(f"{method} / {baseline} NDCG@10 (means over seeds): test {ratios['test']} "
                      f"(valid {ratios['valid']})")


def print_arms_table(result: dict) -> None:
    """One table of every method (the pretrained MiniOneRec arm, its scratch twin, the baselines): NDCG@10 and HR@10
    per seed and their means, valid then test; then ARM_PAIRS' differences paired over seeds and users."""
    from minionerec.ranking.paired import format_over_seeds

    seeds, agg = list(result["seeds"]), result["over_seeds"]
    users = {split: d["users"] for split, d in result["seeds"][seeds[0]]["metrics"]["popularity"].items()}
    cols = [f"seed {s}" for s in seeds] + ["mean"]
    print(f"\n== {result['category']}: pretrained vs scratch vs SASRec ({users['valid']} valid, {users['test']} test "
          f"users; MiniOneRec = SFT from {result['knobs']['base_model']}, scratch = its architecture from random "
          f"weights, trained the same way)")
    print(f"{'split':5s} {'method':18s}" + "".join(f" {' ' + m + ' ':-^{10 * len(cols) - 1}}" for m in ("NDCG@10", "HR@10")))
    print(f"{'':24s}" + (" " + " ".join(f"{c:>9s}" for c in cols)) * 2)
    for split in ("valid", "test"):
        for method in agg["ndcg10"]:
            cells = [v for key in ("ndcg10", "hr10") for v in (*agg[key][method][split]["per_seed"],
                                                                 agg[key][method][split]["mean"])]
            print(f"{split:5s} {method:18s} " + " ".join(f"{v:9.4f}" for v in cells))
    for label, d in agg["pretrained_vs_scratch"].items():
        for split in ("valid", "test"):
            print(f"{label} NDCG@10 on {split}, paired over seeds and users: {format_over_seeds(d[split])}")


def print_datasets(results: dict, plan: Plan, preset: str) -> None:
    """The closing table of a several-dataset run: per dataset and split, each method's NDCG@10 mean and spread."""
    print(f"\n[quality] ##### {len(results)} datasets, preset {preset}, seeds {plan.seeds}: "
          f"NDCG@10 means over seeds (spread = max - min over seeds)")
    scored = next(iter(results.values()))["over_seeds"]["ndcg10"]
    methods = [m for m in method_order(plan) if m != "popularity" and m in scored]
    print(f"{'dataset':28s} {'split':>5s} " + " ".join(f"{m:>22s}" for m in methods))
    for category, r in results.items():
        for split in ("valid", "test"):
            cells = [f"{r['over_seeds']['ndcg10'][m][split]['mean']:.4f} "
                     f"(spread {r['over_seeds']['ndcg10'][m][split]['spread']:.4f})" for m in methods]
            print(f"{category:28s} {split:>5s} " + " ".join(f"{c:>22s}" for c in cells))


# curves.png's panels: (stage, metrics drawn, title); a metric ending in "*" draws every logged one it starts
CURVES = (("SFT", ("train_loss",), "SFT train loss"), ("SFT", ("valid_NDCG@10",), "SFT valid NDCG@10"),
          ("RL", ("reward",), "RL reward"), ("RL", ("valid_NDCG@10",), "RL valid NDCG@10 (step 0 = SFT)"),
          ("RL", ("rollout/target_hit_rate", "rollout/prefix_match_l*", "rollout/frac_groups_zero_std"),
           "RL rollouts (fractions of groups / rollouts)"),
          ("RL", ("rollout/target_mean_rank",), "RL target's mean rank among its rollouts (when found)"))


def write_curves(curves: dict, out_dir: Path, title: str) -> None:
    """curves.csv (stage, step, metric, value: long format, one row per logged point of every curve) and curves.png
    (the CURVES panels, 2 x 3)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "step", "metric", "value"])
        for stage in ("SFT", "RL"):
            for metric, points in curves.get(stage, {}).items():
                for step, value in points:
                    writer.writerow([stage, step, metric, f"{value:.6g}"])
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax, (stage, patterns, label) in zip(axes.flat, CURVES):
        logged = curves.get(stage, {})
        drawn = [m for p in patterns for m in logged if m == p or (p.endswith("*") and m.startswith(p[:-1]))]
        for metric in drawn:
            points = logged[metric]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=metric.removeprefix("rollout/"))
        if len(drawn) > 1:
            ax.legend(fontsize=7)
        ax.set_title(label)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=100)
    plt.close(fig)


def plot(metrics: dict, path: Path, title: str) -> None:
    """HR@10 / NDCG@10 bars per method on valid and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{s} {m}" for s in ("valid", "test") for m in ("NDCG@10", "HR@10")]
    methods = list(metrics)
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [metrics[method][s][m] for s in ("valid", "test") for m in ("NDCG@10", "HR@10")]
        ax.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(labels))], values, width, label=method)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
