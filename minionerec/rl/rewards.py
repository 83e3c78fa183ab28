"""GRPO reward functions for SID recommendation, chosen by name from a registry.

Each reward is a pure module-level function `(completions, target, ...) -> list[float]`: one
float per completion. TRL calls rewards with `prompts`, `completions`, `completion_ids` and every
dataset column as keyword arguments, so the target SID arrives as the `target` column. Completions
arrive grouped: `num_generations` consecutive completions share one prompt, in beam order.

`build_reward_funcs(reward_type, ...)` binds the heavy state (embeddings, a SASRec model) and
returns named callables plus their weights for `GRPOConfig(reward_weights=...)`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from minionerec.ranking.sasrec import load_sasrec, pad_histories

def completion_sid(text: str) -> str:
    """'<a_1><b_2><c_3>\\n' -> '<a_1><b_2><c_3>': the SID a completion names (quotes, blanks dropped)."""
    return text.strip().strip('"').strip()


def rank_weights(num_generations: int) -> list[float]:
    """Penalty of each beam rank r, -1/log2(r+2), normalised so the G penalties sum to -1."""
    raw = [1.0 / math.log2(r + 2) for r in range(num_generations)]
    total = sum(raw)
    return [-w / total for w in raw]


def rule_reward(completions: list[str], target: list[str], **kwargs) -> list[float]:
    """1 for the exact target SID, else 0."""
    return [1.0 if completion_sid(c) == completion_sid(t) else 0.0 for c, t in zip(completions, target, strict=True)]


def ranking_only_reward(completions: list[str], target: list[str], num_generations: int, **kwargs) -> list[float]:
    """Rank-aware penalty: in a group holding the target, each wrong item gets its rank's penalty.

    Groups are `num_generations` consecutive completions in beam order (rank = position in group).
    The target itself gets 0; a group without the target gets 0 everywhere (nothing to contrast).
    """
    if len(completions) % num_generations:
        raise ValueError(f"ranking reward: {len(completions)} completions is not a multiple of "
                         f"num_generations={num_generations}")
    penalty = rank_weights(num_generations)
    hits = rule_reward(completions, target)
    rewards = []
    for start in range(0, len(completions), num_generations):
        group = hits[start : start + num_generations]
        if any(group):
            rewards += [0.0 if hit else penalty[r] for r, hit in enumerate(group)]
        else:
            rewards += [0.0] * num_generations
    return rewards


def semantic_reward(completions: list[str], target: list[str], item_embeddings: np.ndarray,
                    sid_to_row: dict[str, int], item_id: list[str] | None = None,
                    item_to_row: dict[str, int] | None = None, **kwargs) -> list[float]:
    """Cosine similarity of the completion's and the target's item embeddings ([n_items, D] rows).

    The target row comes from the `item_id` column when given (exact even where items share a SID),
    else from its SID. A completion that names no catalogue item gets 0 (constrained decoding never
    produces one).
    """
    if item_id is not None and item_to_row is not None:
        target_rows = [item_to_row.get(i) for i in item_id]
    else:
        target_rows = [sid_to_row.get(completion_sid(t)) for t in target]
    rewards = []
    for c, row_t in zip(completions, target_rows, strict=True):
        row_c = sid_to_row.get(completion_sid(c))
        if row_c is None or row_t is None:
            rewards.append(0.0)
            continue
        a, b = item_embeddings[row_c], item_embeddings[row_t]
        rewards.append(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return rewards


def sasrec_reward(completions: list[str], history_item_id: list[list[str]], sasrec, item_to_row: dict[str, int],
                  sid_to_row: dict[str, int], **kwargs) -> list[float]:
    """A SASRec model's score of the completed item given the user's history of item ids.

    Prompts without a history (title -> SID) and completions naming no item get 0.
    """
    histories = [[item_to_row[i] for i in h if i in item_to_row] for h in history_item_id]
    rows = [sid_to_row.get(completion_sid(c)) for c in completions]
    scored = [k for k, (h, r) in enumerate(zip(histories, rows, strict=True)) if h and r is not None]
    rewards = [0.0] * len(completions)
    if scored:
        device = next(sasrec.parameters()).device
        padded, lengths = pad_histories([histories[k] for k in scored], sasrec.n_items, sasrec.max_len)
        scores = sasrec.forward_eval(padded.to(device), lengths.to(device))  # [n_scored, n_items]
        picked = scores[torch.arange(len(scored), device=device), torch.tensor([rows[k] for k in scored], device=device)]
        for k, value in zip(scored, picked.tolist()):
            rewards[k] = value
    return rewards


REWARDS = {
    "rule": rule_reward,
    "ranking_only": ranking_only_reward,
    "semantic": semantic_reward,
    "sasrec": sasrec_reward,
}
# reward_type -> the rewards TRL sums (weights 1 each); "ranking" = rule + ranking_only, as upstream.
REWARD_TYPES = {
    "rule": ("rule",),
    "ranking": ("rule", "ranking_only"),
    "ranking_only": ("ranking_only",),
    "semantic": ("semantic",),
    "sasrec": ("sasrec",),
}


def check_reward_type(reward_type: str) -> tuple[str, ...]:
    """The reward functions of `reward_type`: one name, or several joined by "+" (e.g. rule+semantic)."""
    names = []
    for part in reward_type.split("+"):
        if part not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type {part!r}; valid: {', '.join(REWARD_TYPES)} (or several joined by +)")
        names.extend(REWARD_TYPES[part])
    if len(set(names)) != len(names):
        raise ValueError(f"reward_type {reward_type!r} names a reward twice ({', '.join(names)})")
    return tuple(names)


def parse_reward_weights(spec: str, names: tuple[str, ...]) -> list[float]:
    """--reward_weights "1+0.5" -> [1.0, 0.5]: TRL's reward_weights, one per reward function; "" = 1 each."""
    if not spec:
        return [1.0] * len(names)
    try:
        weights = [float(w) for w in str(spec).split("+")]
    except ValueError:
        raise ValueError(f"--reward_weights must be '+'-joined numbers like 1+0.5, got {spec!r}") from None
    if len(weights) != len(names):
        raise ValueError(f"--reward_weights needs {len(names)} number(s), one per reward ({', '.join(names)}), "
                         f"got {spec!r}")
    return weights


def sid_from_ids(ids: list[int], id_to_sid_token: dict[int, str]) -> str:
    """Completion token ids -> SID string: the SID tokens among them, in order.

    Why ids, not TRL's decoded text: TRL decodes with skip_special_tokens=True, which erases SID
    tokens that a tokenizer registered as *special*; reading the tokens keeps rewards right anyway.
    """
    return "".join(id_to_sid_token[i] for i in ids if i in id_to_sid_token)


def item_rows(sid_index: dict[str, list[str]]) -> tuple[dict[str, int], dict[str, int]]:
    """(item_id -> row, SID string -> row): rows follow index.json order, as the embeddings and SASRec do.

    A SID shared by several items (the public index has a few collisions) maps to its first item.
    """
    item_to_row = {item_id: row for row, item_id in enumerate(sid_index)}
    sid_to_row: dict[str, int] = {}
    for item_id, sid in sid_index.items():
        sid_to_row.setdefault("".join(sid), item_to_row[item_id])
    return item_to_row, sid_to_row


def _bind(name: str, fn, id_to_sid_token: dict[int, str] | None, **bound):
    """A named reward TRL can call: reads SIDs from completion_ids when the SID token ids are known."""

    def reward(completions, completion_ids=None, **kwargs):
        if id_to_sid_token is not None and completion_ids is not None:
            completions = [sid_from_ids(ids, id_to_sid_token) for ids in completion_ids]
        return fn(completions, **kwargs, **bound)

    reward.__name__ = name  # TRL logs rewards/<name>/mean
    return reward


def build_reward_funcs(reward_type: str, num_generations: int, sid_index: dict[str, list[str]], tokenizer=None,
                       ada_path: str = "", cf_path: str = "", device: str = "cpu") -> tuple[list, list[float]]:
    """The reward callables and weights for `reward_type`; loads embeddings / SASRec only when needed."""
    names = check_reward_type(reward_type)
    item_to_row, sid_to_row = item_rows(sid_index)
    id_to_sid_token = None
    if tokenizer is not None:
        sid_tokens = {t for sid in sid_index.values() for t in sid}
        id_to_sid_token = {i: t for t, i in tokenizer.get_vocab().items() if t in sid_tokens}
    funcs = []
    for name in names:
        bound = {}
        if name == "ranking_only":
            bound["num_generations"] = num_generations
        elif name == "semantic":
            if not ada_path or not Path(ada_path).is_file():
                raise ValueError(f"reward_type semantic needs --ada_path (an .npy of item embeddings), got {ada_path!r}")
            # mapped, not read: a file of the wrong shape (another catalogue's, GBs) fails before its data is read
            embeddings = np.load(ada_path, mmap_mode="r", allow_pickle=False)
            if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.shape[0] != len(sid_index):
                got = embeddings.shape if isinstance(embeddings, np.ndarray) else "an .npz archive"
                raise ValueError(f"{ada_path}: expected [{len(sid_index)}, dim] item embeddings, got {got}")
            bound.update(item_embeddings=np.array(embeddings), sid_to_row=sid_to_row, item_to_row=item_to_row)
        elif name == "sasrec":
            if not cf_path:
                raise ValueError("reward_type sasrec needs --cf_path (a SASRec checkpoint)")
            model = load_sasrec(cf_path, device)
            if model.n_items != len(sid_index):
                raise ValueError(f"{cf_path}: SASRec scores {model.n_items} items, the SID index has {len(sid_index)}")
            bound.update(sasrec=model, item_to_row=item_to_row, sid_to_row=sid_to_row)
        funcs.append(_bind(name, REWARDS[name], id_to_sid_token, **bound))
    return funcs, [1.0] * len(funcs)
