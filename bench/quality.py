"""Quality benchmark: does MiniOneRec beat SASRec, and does RL beat SFT? Every figure over several training seeds.

    python bench/quality.py --preset cpu            # Industrial + Office (../shared/data/Amazon), 3 seeds, ~2.5 h on 2 cores
    python bench/quality.py --preset cpu --category Office_Products --stages sft --seeds 42+1+2+3+4 --threads 1
    python bench/quality.py --preset smoke --data_dir DIR --category Demo   # seconds (the test)
    python bench/quality.py --preset gpu            # bigger model, more steps (untested here: no GPU was lent)

Stages, each timed: popularity -> SASRec (sasrec.py) -> tiny from-scratch Qwen2 (minionerec.model.tiny)
-> SFT (sft.py) -> evaluate (evaluate.py) -> GRPO (rl.py, from the SFT checkpoint) -> evaluate.
The stages run once per training seed (`--seeds 42+1+2`, the preset's by default): the seed sets the tiny
model's random init, the data order of SFT and GRPO and SASRec's init, so each seed is a full, independent
run. Tables give every seed's figure, their mean and spread (max - min); differences (RL - SFT, and
`bench/compare_seeds.py` between two bench runs) are paired over seeds and users (minionerec.ranking.paired.over_seeds).
Every method is scored on the same seeded sample of valid and of test rows with the shared
HR/NDCG code (minionerec/ranking/metrics.py); the LLM by constrained beam search, SASRec by its top-k scores.
Each dataset (`--category`, "+"-joined) gets output_dir/<category>/: results.json and, per seed, seed_<s>/
with that run's predictions, quality.png (bars), curves.csv + curves.png (SFT train loss and valid NDCG@10, RL reward and valid NDCG@10 per step: the
reference curves in bench/reference/). RL runs with rl.py's regression guard when the preset sets
keep_best: its final checkpoint is the best valid NDCG@10 of its evaluations, the SFT weights included.
Tune on valid only: the test table is for reporting.
Each preset is the recipe recipes/quality_<preset>.yaml. The repo must be importable (`pip install -e .`,
which `make install` runs, or PYTHONPATH=.).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

METHODS = ("popularity", "SASRec", "MiniOneRec SFT", "MiniOneRec SFT+RL")
KS = (1, 3, 5, 10, 20)

# Each preset is a recipe, recipes/quality_<preset>.yaml: sections sft / rl / evaluate hold those scripts'
# own fields, section quality the benchmark's (below). Any flag set on the command line wins.
PRESETS = ("smoke", "cpu", "gpu")
MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
              "tie_word_embeddings", "initializer_range", "embedding_std")  # minionerec.model.tiny's flags
QUALITY_KEYS = MODEL_KEYS + ("eval_sample", "sasrec_epochs", "sasrec_patience", "seeds")
SAMPLE_SEED = 42  # the valid/test rows scored: the same for every training seed and configuration (paired users)


def preset_knobs(preset: str) -> dict:
    """The benchmark's flat knobs from recipes/quality_<preset>.yaml (keys checked against each script's fields)."""
    import dataclasses

    import evaluate
    import rl
    import sft
    from minionerec.run.config import recipe_section
    from minionerec.data.sft_tasks import TASKS

    if preset not in PRESETS:
        raise SystemExit(f"error: --preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    path = str(ROOT / "recipes" / f"quality_{preset}.yaml")
    names = lambda cls: [f.name for f in dataclasses.fields(cls)]  # noqa: E731
    knobs = dict(recipe_section(path, "quality", QUALITY_KEYS))
    s = sft.Args(**recipe_section(path, "sft", names(sft.Args)))
    r = rl.Args(**recipe_section(path, "rl", names(rl.Args)))
    e = evaluate.Args(**recipe_section(path, "evaluate", names(evaluate.Args)))
    knobs.update(sft_eval_step=s.eval_step, sft_eval_sample=s.eval_sample, sft_curve=s.test_during_training,
                 sft_keep_best=s.keep_best,
                 rl_eval_step=r.eval_step, keep_best=r.keep_best,
                 sft_steps=s.max_steps, sft_batch_size=s.batch_size, sft_micro_batch_size=s.micro_batch_size,
                 sft_lr=s.learning_rate, sft_warmup_steps=s.warmup_steps, sft_weight_decay=s.weight_decay,
                 sft_lr_scheduler=s.lr_scheduler_type,
                 sft_tasks="+".join(t for t in TASKS if getattr(s, f"task_{t}")),
                 rl_steps=r.max_steps, rl_batch_size=r.train_batch_size, num_generations=r.num_generations,
                 rl_lr=r.learning_rate, rl_beta=r.beta, title_history_sample=r.title_history_sample,
                 reward_type=r.reward_type, add_gt=r.add_gt, num_beams=e.num_beams, eval_batch_size=e.batch_size,
                 prompt_style=s.prompt_style)
    if not s.prompt_style == r.prompt_style == e.prompt_style:
        raise SystemExit(f"error: {path}: prompt_style differs between the sft, rl and evaluate sections")
    return knobs


@dataclass
class Args:
    """Popularity vs SASRec vs MiniOneRec SFT vs SFT+RL on valid and test, over several training seeds."""

    data_dir: str = str(ROOT.parent / "shared" / "data" / "Amazon")  # MiniOneRec layout: train/valid/test/index
    category: str = "Industrial_and_Scientific+Office_Products"  # "+"-joined file prefixes inside data_dir
    preset: str = "cpu"  # smoke | cpu | gpu: the recipe recipes/quality_<preset>.yaml
    output_dir: str = ""  # default bench/out/quality_<preset>; one subdirectory per category
    eval_sample: int = 0  # valid/test rows scored (seeded sample); 0 = preset default; -1 = all
    seeds: str = ""  # "+"-joined training seeds (42+1+2): init, data order, SASRec, GRPO; "" = the preset's
    threads: int = 2  # torch intra-op threads (2 shared cores here)
    # overrides of the preset (0 / negative = keep the preset's value)
    hidden_size: int = 0  # tiny Qwen2 width
    num_layers: int = 0  # tiny Qwen2 depth
    sft_steps: int = 0  # SFT optimizer steps
    sft_lr: float = 0.0  # SFT learning rate
    sft_weight_decay: float = -1.0  # SFT AdamW weight decay (0 allowed)
    sft_lr_scheduler: str = ""  # SFT learning-rate schedule (cosine, constant_with_warmup, ...); "" = preset's
    rl_steps: int = 0  # GRPO steps
    rl_lr: float = 0.0  # GRPO learning rate
    rl_beta: float = -1.0  # KL weight (0 allowed)
    num_generations: int = 0  # GRPO group size
    reward_type: str = ""  # rule | ranking | ranking_only | sasrec (this run's SASRec; minionerec/rl/rewards.py); "" = preset's
    sft_tasks: str = ""  # "+"-joined sft.py tasks (sid_history+item_alignment+...); "" = preset's
    add_gt: str = ""  # RL: put the target into groups that lack it (true/false); "" = preset's
    sasrec_epochs: int = 0  # SASRec epoch cap (early stopping on valid)
    # --- prompt protocol
    prompt_style: str = ""  # upstream | minionerec (sft.py / rl.py / evaluate.py --prompt_style); "" = preset's
    stages: str = "all"  # all | sft (tiny model, SFT and its evaluation only: no SASRec, no RL)


def resolve(args: Args) -> dict:
    """The preset's knobs with command-line overrides applied."""
    from minionerec.run.cli import as_bool
    from minionerec.data.sft_tasks import TASKS

    knobs = preset_knobs(args.preset)
    for name in ("hidden_size", "num_layers", "sft_steps", "sft_lr", "rl_steps", "rl_lr", "num_generations",
                 "sasrec_epochs", "eval_sample"):
        value = getattr(args, name)
        if value:
            knobs[name] = value
    if args.sft_tasks:
        knobs["sft_tasks"] = args.sft_tasks
    if args.reward_type:
        knobs["reward_type"] = args.reward_type
    if args.seeds:
        knobs["seeds"] = args.seeds
    if args.prompt_style:
        knobs["prompt_style"] = args.prompt_style
    if knobs["prompt_style"] not in ("upstream", "minionerec") or args.stages not in ("all", "sft"):
        raise SystemExit(f"error: --prompt_style must be upstream or minionerec and --stages all or sft, "
                         f"got {knobs['prompt_style']!r}, {args.stages!r}")
    try:
        seeds = [int(x) for x in str(knobs["seeds"]).split("+")]
    except ValueError:
        raise SystemExit(f"error: --seeds must be '+'-joined integers like 42+1+2, got {knobs['seeds']!r}") from None
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds repeats a seed: {knobs['seeds']!r}")
    knobs["seeds"] = seeds
    if args.add_gt != "":
        knobs["add_gt"] = as_bool(args.add_gt, "add_gt")
    unknown = set(knobs["sft_tasks"].split("+")) - set(TASKS)
    if unknown:
        raise SystemExit(f"error: --sft_tasks: unknown task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}")
    if args.rl_beta >= 0:
        knobs["rl_beta"] = args.rl_beta
    if args.sft_lr_scheduler:
        knobs["sft_lr_scheduler"] = args.sft_lr_scheduler
    if args.sft_weight_decay >= 0:
        knobs["sft_weight_decay"] = args.sft_weight_decay
    if knobs["num_beams"] < max(KS):
        raise SystemExit(f"error: num_beams {knobs['num_beams']} < {max(KS)}: HR@{max(KS)} needs that many beams")
    if knobs["rl_batch_size"] % knobs["num_generations"]:
        raise SystemExit(f"error: num_generations {knobs['num_generations']} must divide rl batch "
                         f"{knobs['rl_batch_size']}")
    return knobs


def data_paths(data_dir: str, category: str) -> dict:
    from minionerec.data.formats import find_split

    data = Path(data_dir)
    if not data.is_dir():
        raise SystemExit(f"error: --data_dir not found: {data}")
    paths = {split: find_split(data, split, category) for split in ("train", "valid", "test")}
    paths["index"] = data / "index" / f"{category}.index.json"
    paths["item"] = data / "index" / f"{category}.item.json"
    for name, path in paths.items():
        if not Path(path).is_file():
            raise SystemExit(f"error: {name} file not found: {path}")
    return {k: str(v) for k, v in paths.items()}


def sample_split(path: str, n: int, seed: int, out: Path) -> str:
    """A seeded sample of n rows (file order kept) written as CSV; n < 0 or >= len keeps every row."""
    import pandas as pd

    df = pd.read_csv(path)
    if 0 < n < len(df):
        df = df.sample(n=n, random_state=seed).sort_index()
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return str(out)


class Stage:
    """`with Stage("sft"):` prints start, end and seconds; the seconds land in `timings`."""

    timings: dict[str, float] = {}

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.start = time.perf_counter()
        print(f"\n[quality] === {self.name} ({time.strftime('%H:%M:%S')})", flush=True)

    def __exit__(self, *exc):
        Stage.timings[self.name] = round(time.perf_counter() - self.start, 1)
        print(f"[quality] === {self.name} done in {Stage.timings[self.name]:.0f}s", flush=True)


def run_popularity(paths: dict, splits: dict, k: int) -> dict:
    from minionerec.data.formats import load_sid_index, load_split
    from minionerec.ranking.evaluation import popularity_ranking
    from minionerec.ranking.metrics import compute_metrics

    sid_index = load_sid_index(paths["index"])
    catalogue = {"".join(s) for s in sid_index.values()}
    popular = popularity_ranking(list(load_split(paths["train"])["item_sid"]), k)
    out = {}
    for split, path in splits.items():
        targets = list(load_split(path)["item_sid"])
        out[split] = compute_metrics([popular] * len(targets), targets, KS, catalogue)
    return out


def run_sasrec(paths: dict, splits: dict, knobs: dict, out_dir: Path, seed: int) -> tuple[dict, dict]:
    """sasrec.py as is (early stopping on the FULL valid split), then its best model scores both samples."""
    import sasrec
    from minionerec.data.formats import load_catalogue
    from minionerec.ranking.sasrec import encode_split, load_sasrec, score, top_items

    result = sasrec.main(sasrec.Args(train_file=paths["train"], eval_file=paths["valid"], test_file=splits["test"],
                                     sid_index_path=paths["index"], output_dir=str(out_dir), seed=seed, device="cpu",
                                     epochs=knobs["sasrec_epochs"], patience=knobs["sasrec_patience"]))
    items = list(load_catalogue(paths["index"]))
    item_to_row = {item: row for row, item in enumerate(items)}
    model = load_sasrec(result["cf_path"]).eval()
    out = {}
    for split, path in splits.items():
        history, lengths, targets = encode_split(path, item_to_row, model.max_len)
        out[split] = score(top_items(model, history, lengths, "cpu"), targets, items)
    info = {k: result[k] for k in ("best_epoch", "epochs_run", "train_seconds", "cf_path") if k in result}
    info["args"] = result.get("args", {})
    return out, info


def run_eval(model_dir: str, paths: dict, splits: dict, knobs: dict, out_dir: Path, seed: int) -> dict:
    import evaluate

    out = {}
    for split, path in splits.items():
        rows = evaluate.main(evaluate.Args(base_model=model_dir, test_file=path, sid_index_path=paths["index"],
                                           result_json=str(out_dir / f"predictions_{split}.json"),
                                           num_beams=knobs["num_beams"], batch_size=knobs["eval_batch_size"],
                                           seed=seed, dtype="float32", prompt_style=knobs["prompt_style"]))
        out[split] = rows["constrained beam search"]
    return out


def curve(log_history: list[dict], key: str) -> list[list[float]]:
    return [[h["step"], h[key]] for h in log_history if key in h and "step" in h]


def ranking_curve(run_dir: Path) -> list[list[float]]:
    """[step, valid NDCG@10] from a run's eval_during_training.jsonl (sft.py / rl.py --test_during_training)."""
    path = run_dir / "eval_during_training.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["eval_NDCG@10"]] for r in rows if "eval_NDCG@10" in r]


CURVES = (("SFT", "train_loss", "SFT train loss"), ("SFT", "valid_NDCG@10", "SFT valid NDCG@10"),
          ("RL", "reward", "RL reward"), ("RL", "valid_NDCG@10", "RL valid NDCG@10 (step 0 = SFT)"))


def write_curves(curves: dict, out_dir: Path, title: str) -> None:
    """curves.csv (stage, step, metric, value: long format, one row per logged point) and curves.png (2 x 2)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "step", "metric", "value"])
        for stage, metric, _ in CURVES:
            for step, value in curves.get(stage, {}).get(metric, []):
                writer.writerow([stage, step, metric, f"{value:.6g}"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (stage, metric, label) in zip(axes.flat, CURVES):
        points = curves.get(stage, {}).get(metric, [])
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(label)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=100)
    plt.close(fig)


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
        "rl_over_sft_test": ratio(n["MiniOneRec SFT+RL"]["test"], n["MiniOneRec SFT"]["test"]),
        "rl_over_sft_valid": ratio(n["MiniOneRec SFT+RL"]["valid"], n["MiniOneRec SFT"]["valid"]),
        "rl_minus_sft_paired": paired,
    }
    out["targets"] = {
        "MiniOneRec NDCG@10 >= 1.2 x SASRec (test)": bool(n[best_llm]["test"] >= 1.2 * n["SASRec"]["test"]),
        # the guard's promise; on test the paired difference and its SE (printed) say whether RL helped
        "SFT+RL NDCG@10 >= SFT (valid)": bool(n["MiniOneRec SFT+RL"]["valid"] >= n["MiniOneRec SFT"]["valid"]),
    }
    return out


def plot(metrics: dict, path: Path, title: str) -> None:
    """HR@10 / NDCG@10 bars per method on valid and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.2
    labels = [f"{s} {m}" for s in ("valid", "test") for m in ("NDCG@10", "HR@10")]
    methods = [m for m in METHODS if m in metrics]
    for i, method in enumerate(methods):
        values = [metrics[method][s][m] for s in ("valid", "test") for m in ("NDCG@10", "HR@10")]
        ax.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(labels))], values, width, label=method)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(metrics: dict, methods) -> None:
    from minionerec.ranking.metrics import format_table

    for split in ("valid", "test"):
        print(f"\n== {split} ({metrics['popularity'][split]['users']} users)")
        print(format_table({m: metrics[m][split] for m in methods if m in metrics}, KS))


def run_sft(knobs: dict, paths: dict, category: str, base: Path, out_dir: Path, seed: int) -> dict:
    """sft.py with the preset's knobs; its valid-NDCG@10 curve (a seeded sample of the full valid split)
    when the preset asks for it. Returns the curves: train loss per logging step, valid NDCG@10 per eval."""
    import sft
    from minionerec.data.sft_tasks import TASKS

    trainer = sft.main(sft.Args(
        base_model=str(base), train_file=paths["train"], output_dir=str(out_dir / "sft"),
        sid_index_path=paths["index"], item_meta_path=paths["item"], category=category, seed=seed,
        batch_size=knobs["sft_batch_size"], micro_batch_size=knobs["sft_micro_batch_size"],
        max_steps=knobs["sft_steps"], learning_rate=knobs["sft_lr"], warmup_steps=knobs["sft_warmup_steps"],
        weight_decay=knobs["sft_weight_decay"], lr_scheduler_type=knobs["sft_lr_scheduler"], save_steps=10 ** 9,
        logging_steps=max(1, knobs["sft_steps"] // 50), prompt_style=knobs["prompt_style"],
        eval_file=paths["valid"] if knobs["sft_curve"] else "", test_during_training=knobs["sft_curve"],
        eval_step=knobs["sft_eval_step"], eval_sample=knobs["sft_eval_sample"], test_beam=knobs["num_beams"],
        keep_best=knobs["sft_keep_best"],  # early stopping on the curve: the best evaluated step is the SFT model
        eval_steps=10 ** 9,  # no periodic valid-loss passes (sft.py still reports the final one): the curve ranks
        **{f"task_{t}": t in knobs["sft_tasks"].split("+") for t in TASKS}))
    curves = {"train_loss": curve(trainer.state.log_history, "loss"),
              "valid_NDCG@10": ranking_curve(out_dir / "sft")}
    del trainer
    return curves


def run_rl(knobs: dict, paths: dict, category: str, sft_dir: str, run_dir: Path, seed: int,
           cf_path: str, valid_rows: str) -> dict:
    """rl.py from the SFT checkpoint; with keep_best its guard scores `valid_rows` (the bench's valid CSV) at step 0
    (SFT) and every eval_step, and keeps the best. Returns the curves and the guard's choice (guard.json, or None)."""
    import rl

    trainer = rl.main(rl.Args(
        model_path=sft_dir, train_file=paths["train"], sid_index_path=paths["index"],
        item_meta_path=paths["item"], output_dir=str(run_dir), category=category, seed=seed,
        train_batch_size=knobs["rl_batch_size"], num_generations=knobs["num_generations"],
        max_steps=knobs["rl_steps"], learning_rate=knobs["rl_lr"], beta=knobs["rl_beta"],
        reward_type=knobs["reward_type"], add_gt=knobs["add_gt"], title_history_sample=knobs["title_history_sample"],
        # RL prompts only in the tasks SFT taught: title -> SID needs the item-alignment task
        title2sid="item_alignment" in knobs["sft_tasks"].split("+"), cf_path=cf_path,
        gradient_checkpointing=False,  # tiny models: recomputation costs time and saves nothing that matters
        save_steps=10 ** 9, logging_steps=max(1, knobs["rl_steps"] // 50), prompt_style=knobs["prompt_style"],
        # the guard scores exactly the valid rows of the bench's table: SFT+RL >= SFT there by construction
        eval_file=valid_rows if knobs["keep_best"] else "", test_during_training=knobs["keep_best"],
        keep_best=knobs["keep_best"], eval_step=knobs["rl_eval_step"], eval_sample=-1, test_beam=knobs["num_beams"]))
    curves = {"reward": curve(trainer.state.log_history, "reward"), "valid_NDCG@10": ranking_curve(run_dir)}
    del trainer
    guard = run_dir / "guard.json"
    return curves, json.loads(guard.read_text()) if guard.is_file() else None


def kept_sft(guard: dict | None) -> bool:
    """True when rl.py's guard wrote the SFT weights as final_checkpoint (no RL evaluation beat step 0)."""
    return guard is not None and guard["chosen_step"] == 0


def run_dataset(args: Args, knobs: dict, category: str, out_dir: Path) -> dict:
    """Every stage on one dataset, once per seed; prints the per-seed tables and writes results.json's dict."""
    paths = data_paths(args.data_dir, category)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"\n[quality] ##### {category} -> {out_dir}", flush=True)
    splits = {s: sample_split(paths[s], knobs["eval_sample"], SAMPLE_SEED, out_dir / "samples" / f"{s}.csv")
              for s in ("valid", "test")}
    with Stage("popularity"):  # no training: the same for every seed
        popularity = run_popularity(paths, splits, knobs["num_beams"])
    runs = {seed: run_seed(args, knobs, paths, category, splits, popularity, out_dir / f"seed_{seed}", seed)
            for seed in knobs["seeds"]}
    result = {"args": asdict(args), "category": category, "knobs": knobs, "data": paths, "samples": splits,
              "seeds": runs, "over_seeds": over_seeds_summary(runs), "total_s": round(time.perf_counter() - start, 1)}
    print(f"\n[quality] ##### {category}: {len(runs)} seeds, total {result['total_s'] / 60:.1f} min")
    print_seed_tables(result)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    return result


def run_seed(args: Args, knobs: dict, paths: dict, category: str, splits: dict, popularity: dict, out_dir: Path,
             seed: int) -> dict:
    """One training seed: SASRec, tiny model, SFT, evaluation, guarded GRPO, evaluation. Writes out_dir's files."""
    from transformers import set_seed

    from minionerec.model.tiny import build_tiny_model

    set_seed(seed)  # each seed starts from the same state, as if run alone
    out_dir.mkdir(parents=True, exist_ok=True)
    Stage.timings = {}
    start = time.perf_counter()
    print(f"\n[quality] ##### {category}, seed {seed} -> {out_dir}", flush=True)
    metrics, curves, info = {"popularity": popularity}, {}, {}
    if args.stages == "all":
        with Stage("SASRec"):
            metrics["SASRec"], info["SASRec"] = run_sasrec(paths, splits, knobs, out_dir / "sasrec", seed)
    with Stage("tiny Qwen2 base model"):
        base = build_tiny_model(out_dir / "base_model", paths["index"], paths["item"], seed=seed,
                                **{k: knobs[k] for k in MODEL_KEYS if k in knobs})
    with Stage("SFT"):
        curves["SFT"] = run_sft(knobs, paths, category, base, out_dir, seed)
        sft_dir = str(out_dir / "sft" / "final_checkpoint")
    with Stage("evaluate SFT (valid, test)"):
        metrics["MiniOneRec SFT"] = run_eval(sft_dir, paths, splits, knobs, out_dir / "eval_sft", SAMPLE_SEED)
    result = {"seed": seed, "metrics": metrics, "curves": curves,
              "predictions": {"MiniOneRec SFT": prediction_paths(out_dir / "eval_sft", splits)}}
    if args.stages == "all":
        rl_result = run_rl_stages(knobs, paths, category, splits, metrics, curves, info, sft_dir, out_dir, seed)
        result["predictions"]["MiniOneRec SFT+RL"] = rl_result.pop("predictions")
        result.update(rl_result)
    total = time.perf_counter() - start
    result.update(timings_s=Stage.timings, total_s=round(total, 1))
    print(f"\n[quality] preset={args.preset} category={category} seed={seed} stages={args.stages} "
          f"prompt_style={knobs['prompt_style']} total {total / 60:.1f} min; stage seconds {json.dumps(Stage.timings)}")
    print_tables(metrics, METHODS)
    if args.stages == "all":
        print_summary(result)
    plot(metrics, out_dir / "quality.png", f"{category} ({args.preset} preset, seed {seed})")
    write_curves(curves, out_dir, f"{category}: reference curves ({args.preset} preset, seed {seed})")
    return result


def run_rl_stages(knobs: dict, paths: dict, category: str, splits: dict, metrics: dict, curves: dict, info: dict,
                  sft_dir: str, out_dir: Path, seed: int) -> dict:
    """GRPO from the SFT checkpoint (guarded when keep_best), then its final checkpoint scored on valid and test."""
    cf_path = info["SASRec"]["cf_path"] if knobs["reward_type"] == "sasrec" else ""
    run_dir = out_dir / "rl"
    with Stage("RL (GRPO)"):
        curves["RL"], guard = run_rl(knobs, paths, category, sft_dir, run_dir, seed, cf_path, splits["valid"])
    if kept_sft(guard):  # final_checkpoint is a copy of the SFT weights: SFT's scores are its scores
        rl_eval_dir, metrics["MiniOneRec SFT+RL"] = out_dir / "eval_sft", metrics["MiniOneRec SFT"]
    else:
        rl_eval_dir = out_dir / "eval_rl"
        with Stage("evaluate SFT+RL (valid, test)"):
            metrics["MiniOneRec SFT+RL"] = run_eval(str(run_dir / "final_checkpoint"), paths, splits, knobs,
                                                    rl_eval_dir, SAMPLE_SEED)
    sft_predictions, rl_predictions = prediction_paths(out_dir / "eval_sft", splits), prediction_paths(rl_eval_dir, splits)
    paired = {split: paired_ndcg10(sft_predictions[split], rl_predictions[split]) for split in splits}
    return {"summary": summarise(metrics, paired), "sasrec": info.get("SASRec", {}), "guard": guard,
            "predictions": rl_predictions}


def prediction_paths(eval_dir: Path, splits: dict) -> dict[str, str]:
    """{split: the predictions JSON that run_eval wrote into eval_dir}."""
    return {split: str(eval_dir / f"predictions_{split}.json") for split in splits}


def over_seeds_summary(runs: dict[int, dict]) -> dict:
    """NDCG@10 of every method and split across seeds (per seed, mean, spread = max - min), and the RL - SFT
    difference paired over seeds and users."""
    from minionerec.ranking.paired import over_seeds

    first = next(iter(runs.values()))
    out = {"ndcg10": {}}
    for method in (m for m in METHODS if m in first["metrics"]):
        out["ndcg10"][method] = {}
        for split in ("valid", "test"):
            values = [r["metrics"][method][split]["NDCG@10"] for r in runs.values()]
            mean = sum(values) / len(values)
            out["ndcg10"][method][split] = {"per_seed": values, "mean": mean, "spread": max(values) - min(values),
                                            "spread_over_mean": (max(values) - min(values)) / mean if mean else None}
    if "summary" in first:
        out["rl_minus_sft"] = {split: over_seeds([r["summary"]["rl_minus_sft_paired"][split] for r in runs.values()])
                               for split in ("valid", "test")}
        n = out["ndcg10"]
        out["minionerec_over_sasrec"] = {split: ratio(n["MiniOneRec SFT+RL"][split]["mean"], n["SASRec"][split]["mean"])
                                         for split in ("valid", "test")}
    return out


def print_seed_tables(result: dict) -> None:
    """NDCG@10 per seed, mean and spread for every method, valid then test; the RL - SFT line over seeds."""
    from minionerec.ranking.paired import format_over_seeds

    seeds, agg = list(result["seeds"]), result["over_seeds"]
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
        ratios = {split: "n/a" if r is None else f"{r:.3f}" for split, r in agg["minionerec_over_sasrec"].items()}
        print(f"MiniOneRec SFT+RL / SASRec NDCG@10 (means over seeds): test {ratios['test']} (valid {ratios['valid']})")


def print_summary(result: dict) -> None:
    summary, guard = result["summary"], result["guard"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"\nNDCG@10 ratios: MiniOneRec/SASRec test {fmt(summary['minionerec_over_sasrec_test'])} "
          f"(valid {fmt(summary['minionerec_over_sasrec_valid'])}); RL/SFT test {fmt(summary['rl_over_sft_test'])} "
          f"(valid {fmt(summary['rl_over_sft_valid'])})")
    if guard:
        print("RL guard (valid NDCG@10 by step): " + ", ".join(f"{c['step']} {c[guard['metric']]:.4f}"
                                                              for c in guard["curve"])
              + f" -> step {guard['chosen_step']} kept" + (" (the SFT weights)" if guard["chosen_step"] == 0 else ""))
    for split, d in summary["rl_minus_sft_paired"].items():
        print(f"RL - SFT per-user NDCG@10 on {split}: {d['mean']:+.4f} +/- {d['se']:.4f} (paired SE, z {d['z']:+.1f}; "
              f"{d['better']} users better, {d['worse']} worse)")
    for target, held in summary["targets"].items():
        print(f"target {'HOLDS' if held else 'FAILS'}: {target}")


def main(args: Args) -> dict:
    """One dataset: its results.json dict. Several ("+"-joined --category): {category: results} plus a closing
    table of every dataset's NDCG@10 ratios."""
    knobs = resolve(args)
    categories = [c for c in args.category.split("+") if c]
    if not categories or len(set(categories)) != len(categories):
        raise SystemExit(f"error: --category must be '+'-joined distinct names, got {args.category!r}")
    for category in categories:  # every dataset's files exist before the first one starts training
        data_paths(args.data_dir, category)
    out_root = Path(args.output_dir or ROOT / "bench" / "out" / f"quality_{args.preset}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)
    print(f"[quality] preset={args.preset} data={args.data_dir} categories={categories} -> {out_root}\n"
          f"[quality] knobs={json.dumps(knobs)}", flush=True)
    results = {category: run_dataset(args, knobs, category, out_root / category if len(categories) > 1 else out_root)
               for category in categories}
    if len(categories) == 1:
        return results[categories[0]]
    print(f"\n[quality] ##### {len(categories)} datasets, preset {args.preset}, seeds {knobs['seeds']}: "
          f"NDCG@10 means over seeds (spread = max - min over seeds)")
    print(f"{'dataset':28s} {'split':>5s} " + " ".join(f"{m:>22s}" for m in METHODS if m != "popularity"))
    for category, r in results.items():
        for split in ("valid", "test"):
            cells = [f"{d[split]['mean']:.4f} (spread {d[split]['spread']:.4f})"
                     for m, d in r["over_seeds"]["ndcg10"].items() if m != "popularity"]
            print(f"{category:28s} {split:>5s} " + " ".join(f"{c:>22s}" for c in cells))
    (out_root / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    from minionerec.run.cli import run

    run(main, Args)
