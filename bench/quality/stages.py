"""The stage runners: each trains or scores one thing with its script's own code (sasrec.py, the tiny model, sft.py,
evaluate.py, rl.py) on the recipe's flags plus the per-run paths and seed, timed by `Stage`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from bench.quality.plan import KS, Plan


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


def sample_split(path: str, n: int, seed: int, out: Path) -> str:
    """A seeded sample of n rows (file order kept) written as CSV; n < 0 or >= len keeps every row."""
    import pandas as pd

    df = pd.read_csv(path)
    if 0 < n < len(df):
        df = df.sample(n=n, random_state=seed).sort_index()
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return str(out)


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


def run_sasrec(plan: Plan, paths: dict, splits: dict, out_dir: Path, seed: int) -> tuple[dict, dict, dict]:
    """sasrec.py with the recipe's flags (early stopping on the FULL valid split), then its best model scores both
    samples, by item id and by SID (score_by_sid); its ranked item ids per row go to out_dir/predictions_<split>.json
    (for paired differences). Returns (metrics by item, metrics by SID, info)."""
    import sasrec
    from minionerec.ranking.sasrec import encode_split, load_sasrec, score, score_by_sid, top_items
    from minionerec.ranking.shared_sids import sid_strings

    result = sasrec.main(dataclasses.replace(
        plan.sasrec, train_file=paths["train"], eval_file=paths["valid"], test_file=splits["test"],
        sid_index_path=paths["index"], output_dir=str(out_dir), seed=seed, device="cpu"))
    sid_of = sid_strings(paths["index"])  # item -> SID string, in catalogue order (SASRec's rows)
    items = list(sid_of)
    item_to_row = {item: row for row, item in enumerate(items)}
    model = load_sasrec(result["cf_path"]).eval()
    out, by_sid, predictions = {}, {}, {}
    for split, path in splits.items():
        history, lengths, targets = encode_split(path, item_to_row, model.max_len)
        ranked = top_items(model, history, lengths, "cpu")
        out[split] = score(ranked, targets, items)
        by_sid[split] = score_by_sid(ranked, targets, items, sid_of)
        predictions[split] = str(out_dir / f"predictions_{split}.json")
        Path(predictions[split]).write_text(json.dumps([{"item_id": items[t], "predict": [items[r] for r in row]}
                                                        for t, row in zip(targets.tolist(), ranked.tolist())]))
    info = {k: result[k] for k in ("best_epoch", "epochs_run", "train_seconds", "cf_path") if k in result}
    info.update(args=result.get("args", {}), predictions=predictions)
    return out, by_sid, info


def base_model(plan: Plan, paths: dict, out_dir: Path, seed: int) -> Path:
    """The pretrained directory every arm starts from, else a tiny model built for this seed (the tiny section)."""
    from minionerec.model.tiny import build_tiny_model

    if plan.base_model:
        return Path(plan.base_model)
    with Stage("tiny Qwen2 base model"):
        return build_tiny_model(**vars(dataclasses.replace(
            plan.tiny, output_dir=str(out_dir / "base_model"), sid_index_path=paths["index"],
            item_meta_path=paths["item"], seed=seed)))


def run_sft(plan: Plan, paths: dict, category: str, base: Path, out_dir: Path, seed: int) -> dict:
    """sft.py with the recipe's flags; its valid-NDCG@10 curve (a seeded sample of the full valid split) when the
    recipe sets rank_eval_on_valid (with keep_best: early stopping on the curve, the best evaluated step is the
    SFT model). Returns the curves: train loss per logging step, valid NDCG@10 per eval."""
    import sft

    s = plan.sft
    trainer = sft.main(dataclasses.replace(
        s, base_model=str(base), train_file=paths["train"], output_dir=str(out_dir / "sft"),
        sid_index_path=paths["index"], item_meta_path=paths["item"], category=category, seed=seed,
        save_steps=10 ** 9, logging_steps=max(1, s.max_steps // 50),
        eval_file=paths["valid"] if s.rank_eval_on_valid else "", rank_eval_beams=plan.evaluate.num_beams,
        eval_steps=10 ** 9))  # no periodic valid-loss passes (sft.py still reports the final one): the curve ranks
    curves = {"train_loss": curve(trainer.state.log_history, "loss"),
              "valid_NDCG@10": ranking_curve(out_dir / "sft")}
    del trainer
    return curves


def run_eval(plan: Plan, model_dir: str, paths: dict, splits: dict, out_dir: Path, seed: int) -> dict:
    """evaluate.py with the recipe's flags on each split's sample."""
    import evaluate

    out = {}
    for split, path in splits.items():
        rows = evaluate.main(dataclasses.replace(
            plan.evaluate, base_model=model_dir, test_file=path, sid_index_path=paths["index"],
            result_json=str(out_dir / f"predictions_{split}.json"), seed=seed, dtype="float32"))
        out[split] = rows["constrained beam search"]
    return out


def prediction_paths(eval_dir: Path, splits: dict) -> dict[str, str]:
    """{split: the predictions JSON that run_eval wrote into eval_dir}."""
    return {split: str(eval_dir / f"predictions_{split}.json") for split in splits}


def run_rl(plan: Plan, paths: dict, category: str, sft_dir: str, run_dir: Path, seed: int,
           sasrec_path: str, valid_rows: str) -> tuple[dict, dict | None]:
    """rl.py (the recipe's flags) from the SFT checkpoint; with rank_eval_on_valid and keep_best its guard scores
    `valid_rows` (the bench's valid CSV) at step 0 (SFT) and at every rank_eval_every, and keeps the best. Returns
    the curves (reward, valid NDCG@10, KL and the rollout diagnostics rollout/*) and the guard's choice (guard.json,
    or None)."""
    import rl

    r = plan.rl
    trainer = rl.main(dataclasses.replace(
        r, model_path=sft_dir, train_file=paths["train"], sid_index_path=paths["index"],
        item_meta_path=paths["item"], output_dir=str(run_dir), category=category, seed=seed,
        # RL prompts only in the tasks SFT taught: title -> SID needs the item-alignment task
        title2sid=plan.sft.task_item_alignment, sasrec_path=sasrec_path,
        gradient_checkpointing=False,  # models this small: recomputation costs time and saves nothing that matters
        save_steps=10 ** 9, logging_steps=max(1, r.max_steps // 50),
        # the guard scores exactly the valid rows of the bench's table: SFT+RL >= SFT there by construction
        eval_file=valid_rows if r.rank_eval_on_valid else "", eval_sample=-1, rank_eval_beams=plan.evaluate.num_beams))
    history = trainer.state.log_history
    diagnostics = sorted({k for h in history for k in h if k.startswith("rollout/")})  # rl.py logs them every step
    curves = {"reward": curve(history, "reward"), "valid_NDCG@10": ranking_curve(run_dir), "kl": curve(history, "kl"),
              **{key: curve(history, key) for key in diagnostics}}
    del trainer
    guard = run_dir / "guard.json"
    return curves, json.loads(guard.read_text()) if guard.is_file() else None


def final_is_sft_weights(guard: dict | None) -> bool:
    """True when rl.py's guard wrote the SFT weights as final_checkpoint (no RL evaluation beat step 0)."""
    return guard is not None and guard["chosen_step"] == 0


def curve(log_history: list[dict], key: str) -> list[list[float]]:
    """[step, value] of each log entry with `key`; None (TRL: nothing to average, e.g. no rollout hit) is left out."""
    return [[h["step"], h[key]] for h in log_history if h.get(key) is not None and "step" in h]


def ranking_curve(run_dir: Path) -> list[list[float]]:
    """[step, valid NDCG@10] from a run's eval_during_training.jsonl (sft.py / rl.py --rank_eval_on_valid)."""
    path = run_dir / "eval_during_training.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["eval_NDCG@10"]] for r in rows if "eval_NDCG@10" in r]
