"""Paired comparison of two methods scored on the same users: per-user differences, not two means.

Two recommenders evaluated on the same rows share each user's difficulty, so the per-user difference
B - A has a far smaller spread than either mean; its standard error says whether a gap is real or
sampling noise. Rows are evaluate.py's predictions JSON (`item_sid` the target, `predict` the ranked
list); both files must hold the same rows in the same order.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from minionerec.data.formats import DataError
from minionerec.ranking.metrics import hit_at, ndcg_at, target_rank

METRICS = {"HR": hit_at, "NDCG": ndcg_at}
NOISE_SES = 2  # a mean difference counts only beyond this many standard errors


def load_predictions(path) -> list[dict]:
    """evaluate.py's predictions JSON; DataError names the file and the first bad row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty list of prediction rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "item_sid" not in row or not isinstance(row.get("predict"), list):
            raise DataError(f"{path}: row {i}: expected an object with item_sid and a predict list")
    return rows


def _user(row: dict, by_id: bool) -> tuple:
    """Who a prediction row scores: its target and history, as item ids or as SIDs."""
    if by_id:
        return str(row["item_id"]), [str(h) for h in row.get("history_item_id", [])]
    return row["item_sid"], row.get("history_item_sid")


def check_same_rows(a: list[dict], b: list[dict], name_a: str = "A", name_b: str = "B") -> None:
    """Same users in the same order: equal length, and each row's target and history agree: by item id where both
    rows carry one (runs on different SID indexes of one dataset pair by user), else by SID."""
    if len(a) != len(b):
        raise DataError(f"{name_a} has {len(a)} rows, {name_b} {len(b)}: a paired comparison needs the same rows")
    for i, (x, y) in enumerate(zip(a, b)):
        by_id = "item_id" in x and "item_id" in y
        user_a, user_b = _user(x, by_id), _user(y, by_id)
        if user_a != user_b:
            item = "item " if by_id else ""
            raise DataError(f"row {i}: {name_a} and {name_b} score different users (target {item}{user_a[0]} vs "
                            f"{item}{user_b[0]}); evaluate both on the same --test_file and --sample")


def paired_difference(a: list[dict], b: list[dict], metric: str = "NDCG", k: int = 10) -> dict:
    """Per-user metric@k of B minus A: mean, paired standard error, z, and how many users got better/worse."""
    score = METRICS[metric]
    per_user = [(score(target_rank(x["predict"], x["item_sid"]), k), score(target_rank(y["predict"], y["item_sid"]), k))
                for x, y in zip(a, b)]
    diffs = [sb - sa for sa, sb in per_user]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else 0.0
    return {"a": sum(sa for sa, _ in per_user) / n, "b": sum(sb for _, sb in per_user) / n, "mean": mean, "se": se,
            "z": mean / se if se else 0.0, "users": n, "better": sum(d > 0 for d in diffs),
            "worse": sum(d < 0 for d in diffs)}


def compare(a: list[dict], b: list[dict], ks) -> dict[str, dict]:
    """`paired_difference` for HR@k and NDCG@k, every k in `ks`."""
    return {f"{metric}@{k}": paired_difference(a, b, metric, k) for metric in METRICS for k in ks}


def format_comparison(results: dict[str, dict], name_a: str = "A", name_b: str = "B") -> str:
    lines = [f"{'metric':<8} {name_a[:12]:>12} {name_b[:12]:>12} {'B - A':>9} {'paired SE':>9} {'z':>6} "
             f"{'better':>6} {'worse':>6}"]
    for name, d in results.items():
        lines.append(f"{name:<8} {d['a']:>12.4f} {d['b']:>12.4f} {d['mean']:>+9.4f} {d['se']:>9.4f} {d['z']:>+6.1f} "
                     f"{d['better']:>6} {d['worse']:>6}")
    return "\n".join(lines)


def over_seeds(per_seed: list[dict]) -> dict:
    """Pool `paired_difference` results of the same comparison trained with several seeds (same users each time).

    Two noises: per-user sampling (each seed's paired SE) and run-to-run variance (how much the per-seed
    differences disagree). `se_seeds` is the SE of the mean over seeds (the run-to-run one, n - 1 degrees of
    freedom); `se_users` pools the per-seed user SEs (sqrt(sum se^2) / n). A difference counts as real
    (`exceeds_noise`) only when it is more than twice the larger of the two and every seed agrees in sign.
    """
    diffs = [d["mean"] for d in per_seed]
    n = len(diffs)
    mean = sum(diffs) / n
    se_seeds = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1) / n) if n > 1 else math.nan
    se_users = math.sqrt(sum(d["se"] ** 2 for d in per_seed)) / n
    noise = se_users if n == 1 else max(se_seeds, se_users)
    same_sign = all(x > 0 for x in diffs) or all(x < 0 for x in diffs)
    return {"mean": mean, "se_seeds": se_seeds, "se_users": se_users, "seeds": n, "per_seed": diffs,
            "positive_seeds": sum(x > 0 for x in diffs), "exceeds_noise": bool(n > 1 and same_sign and abs(mean) > NOISE_SES * noise)}


def format_over_seeds(d: dict) -> str:
    """One line: mean +/- both SEs, the per-seed differences and the verdict (one seed: only the per-user noise
    is known, so the verdict says so rather than "within the noise")."""
    if d["seeds"] == 1:
        side = "beyond" if abs(d["mean"]) > NOISE_SES * d["se_users"] else "within"
        verdict = f"one seed: {side} the per-user noise, the seed noise unknown"
    else:
        verdict = "exceeds the noise" if d["exceeds_noise"] else "within the noise"
    return (f"{d['mean']:+.4f} (SE over seeds {d['se_seeds']:.4f}, over users {d['se_users']:.4f}; per seed "
            + " ".join(f"{x:+.4f}" for x in d["per_seed"]) + f"): {verdict}")
