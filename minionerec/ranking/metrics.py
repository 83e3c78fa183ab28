"""Top-K recommendation metrics: HR@K and NDCG@K with one relevant item per user.

The target's 0-based position `rank` in the prediction list gives HR@K = [rank < K] and
NDCG@K = [rank < K] / log2(rank + 2) (the ideal DCG of one relevant item is 1). Users whose target
is absent score 0. Invalid (not a catalogue SID) and duplicate predictions are counted, never
silently dropped: a duplicate still occupies its slot, exactly as it would for a user.
"""
from __future__ import annotations

import math

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def target_rank(predictions: list[str], target: str) -> int | None:
    """0-based position of the first occurrence of `target`, or None."""
    try:
        return predictions.index(target)
    except ValueError:
        return None


def hit_at(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg_at(rank: int | None, k: int) -> float:
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def ks_for(num_beams: int, ks=DEFAULT_KS) -> list[int]:
    """The K values a list of `num_beams` predictions can measure."""
    return [k for k in ks if k <= num_beams]


def count_invalid_and_duplicates(predictions: list[list[str]], catalogue: set[str]) -> tuple[int, int]:
    """(predictions not in the catalogue, predictions repeating an earlier one for the same user)."""
    invalid = duplicate = 0
    for preds in predictions:
        seen = set()
        for p in preds:
            invalid += p not in catalogue
            duplicate += p in seen
            seen.add(p)
    return invalid, duplicate


def compute_metrics(predictions: list[list[str]], targets: list[str], ks, catalogue: set[str] | None = None) -> dict:
    """Mean HR@K / NDCG@K over users, plus counts. `predictions[i]` is user i's ranked list."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction lists for {len(targets)} targets")
    if not targets:
        raise ValueError("no users to evaluate")
    ranks = [target_rank(p, t) for p, t in zip(predictions, targets)]
    n = len(targets)
    result = {"users": n}
    for k in ks:
        result[f"HR@{k}"] = sum(hit_at(r, k) for r in ranks) / n
        result[f"NDCG@{k}"] = sum(ndcg_at(r, k) for r in ranks) / n
    if catalogue is not None:
        result["invalid"], result["duplicate"] = count_invalid_and_duplicates(predictions, catalogue)
    return result


def format_table(rows: dict[str, dict], ks) -> str:
    """One line per method: `rows` maps a method name to `compute_metrics` output."""
    header = ["method", "users"] + [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + ["invalid", "duplicate"]
    lines = [header]
    for name, m in rows.items():
        lines.append([name, str(m["users"])] + [f"{m[f'HR@{k}']:.4f}" for k in ks]
                     + [f"{m[f'NDCG@{k}']:.4f}" for k in ks] + [str(m.get("invalid", "-")), str(m.get("duplicate", "-"))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)
