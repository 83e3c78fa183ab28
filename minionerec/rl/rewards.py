"""GRPO reward functions for SID recommendation, chosen by name from one registry (REWARDS).

Each reward is a pure module-level function `(completions, target, ...) -> list[float]`: one
float per completion. TRL calls rewards with `prompts`, `completions`, `completion_ids` and every
dataset column as keyword arguments, so the target SID arrives as the `target` column. Completions
arrive grouped: `num_generations` consecutive completions share one prompt, in beam order.

A REWARDS entry holds the function, the rl.py flags naming the files it reads (rl.check_args requires them,
via reward_files), the rl.py flags of its other options (reward_options) and its binder, which loads the heavy state
(embeddings, a SASRec model) or parses the options once.
`build_reward_funcs(reward_type, ...)` returns the bound callables; their weights are --reward_weights
(parse_reward_weights -> GRPOConfig.reward_weights).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from minionerec.data.formats import split_sid
from minionerec.ranking.sasrec import load_sasrec, pad_histories


def completion_sid(text: str) -> str:
    """'<a_1><b_2><c_3>\\n' -> '<a_1><b_2><c_3>': the SID a completion names (quotes, blanks dropped)."""
    return text.strip().strip('"').strip()


def shared_levels(completion: str, target: str) -> int:
    """How many leading SID levels `completion` shares with `target` (0 when the first differs); 0 too for a completion
    that is not a whole SID of the target's length (free text, a truncated SID)."""
    got, want = split_sid(completion_sid(completion)), split_sid(completion_sid(target))
    if len(got) != len(want):
        return 0
    return next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), len(want))


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


def prefix_reward(completions: list[str], target: list[str], level_weights: tuple[float, ...],
                  **kwargs) -> list[float]:
    """Partial credit by shared SID prefix: level_weights[k - 1] when the first k levels match the target (the last
    weight: the exact item), 0 when the first level differs or the completion is no SID of the target's length."""
    rewards = []
    for c, t in zip(completions, target, strict=True):
        k = shared_levels(c, t)
        rewards.append(level_weights[k - 1] if k else 0.0)
    return rewards


def parse_prefix_weights(spec: str, levels: int) -> tuple[float, ...]:
    """--prefix_reward_weights "0.2,0.5,1.0" -> (0.2, 0.5, 1.0): one weight per SID level of the index, finite, in
    [0, 1] and non-decreasing (matching more levels never earns less), the last (the exact item) > 0."""
    try:
        weights = tuple(float(w) for w in str(spec).split(","))
    except ValueError:
        raise ValueError(f"--prefix_reward_weights must be comma-separated numbers like 0.2,0.5,1.0, "
                         f"got {spec!r}") from None
    if len(weights) != levels:
        raise ValueError(f"--prefix_reward_weights needs {levels} number(s), one per SID level of the index, "
                         f"got {spec!r}")
    if not all(0 <= w <= 1 for w in weights) or any(a > b for a, b in zip(weights, weights[1:])) or weights[-1] == 0:
        raise ValueError(f"--prefix_reward_weights must be non-decreasing numbers in [0, 1] ending above 0, "
                         f"got {spec!r}")
    return weights


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


@dataclass(frozen=True)
class RewardContext:
    """What a binder may read besides its files: the group size and the catalogue's rows (index.json order)."""

    num_generations: int  # completions per prompt
    n_items: int  # catalogue items: rows of the embeddings / items SASRec scores
    item_to_row: dict[str, int]  # item id -> row
    sid_to_row: dict[str, int]  # SID string -> row (a shared SID -> its first item)
    levels: int  # SID levels of the index (tokens per SID)
    device: str = "cpu"  # where a model the binder loads goes


def no_state(ctx: RewardContext) -> dict:
    """The binder of a reward that reads only the dataset columns."""
    return {}


def bind_group_size(ctx: RewardContext) -> dict:
    """ranking_only's group: num_generations consecutive completions."""
    return {"num_generations": ctx.num_generations}


# --prefix_reward_weights' default: a 3-level index (the paper's), 1 level -> 0.2, 2 -> 0.5, the exact item -> 1
PREFIX_WEIGHTS = "0.2,0.5,1.0"


def bind_prefix_weights(ctx: RewardContext, prefix_reward_weights: str = PREFIX_WEIGHTS) -> dict:
    """prefix's weights, one per SID level of the index (rl.check_data checks them before the tokenizer loads)."""
    return {"level_weights": parse_prefix_weights(prefix_reward_weights, ctx.levels)}


def bind_item_embeddings(ctx: RewardContext, path: str) -> dict:
    """The [n_items, D] item embeddings in `path` and the row maps; another catalogue's file is a one-line error."""
    # mapped, not read: a file of the wrong shape (another catalogue's, GBs) fails before its data is read
    embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.shape[0] != ctx.n_items:
        got = embeddings.shape if isinstance(embeddings, np.ndarray) else "an .npz archive"
        raise ValueError(f"{path}: expected [{ctx.n_items}, dim] item embeddings, got {got}")
    return dict(item_embeddings=np.array(embeddings), sid_to_row=ctx.sid_to_row, item_to_row=ctx.item_to_row)


def bind_sasrec(ctx: RewardContext, path: str) -> dict:
    """The SASRec model saved at `path` (on ctx.device) and the row maps; another catalogue's model is an error."""
    model = load_sasrec(path, ctx.device)
    if model.n_items != ctx.n_items:
        raise ValueError(f"{path}: SASRec scores {model.n_items} items, the SID index has {ctx.n_items}")
    return dict(sasrec=model, item_to_row=ctx.item_to_row, sid_to_row=ctx.sid_to_row)


@dataclass(frozen=True)
class Reward:
    """A registry entry: the function TRL calls, the rl.py flags naming the files it reads and its other options,
    and its binder."""

    func: Callable[..., list[float]]  # (completions, **dataset columns, **bound) -> one float per completion
    files: dict[str, str] = field(default_factory=dict)  # rl.py flag -> what its file holds; each must exist
    # (RewardContext, *the files' paths, in order, **the options given) -> kwargs bound into func
    bind: Callable[..., dict] = no_state
    options: tuple[str, ...] = ()  # rl.py flags (not files) the binder takes by name; one not given: its default


# The registry: --reward_type name -> entry. A new reward is its function plus one line here (and, when it reads
# a file, the rl.py flag naming it).
REWARDS = {
    "rule": Reward(rule_reward),
    "ranking_only": Reward(ranking_only_reward, bind=bind_group_size),
    "prefix": Reward(prefix_reward, bind=bind_prefix_weights, options=("prefix_reward_weights",)),
    "semantic": Reward(semantic_reward, files={"item_embeddings_path": "an .npy of item embeddings"},
                       bind=bind_item_embeddings),
    "sasrec": Reward(sasrec_reward, files={"sasrec_path": "a SASRec checkpoint"}, bind=bind_sasrec),
}
# --reward_type names that run several registry rewards (TRL sums them): upstream's "ranking" = rule + ranking_only
COMBINED = {"ranking": ("rule", "ranking_only")}


def reward_types() -> dict[str, tuple[str, ...]]:
    """--reward_type name -> the REWARDS it runs: each registry name, followed by the COMBINED names starting with it
    (rule, ranking, ranking_only, prefix, semantic, sasrec). Read at call time, so an entry added to REWARDS counts."""
    types = {}
    for name in REWARDS:
        types[name] = (name,)
        types.update({combined: parts for combined, parts in COMBINED.items() if parts[0] == name})
    return types


def check_reward_type(reward_type: str) -> tuple[str, ...]:
    """The reward functions of `reward_type`: one name, or several joined by "+" (e.g. rule+semantic)."""
    types = reward_types()
    names = []
    for part in reward_type.split("+"):
        if part not in types:
            raise ValueError(f"unknown reward_type {part!r}; valid: {', '.join(types)} (or several joined by +)")
        names.extend(types[part])
    if len(set(names)) != len(names):
        raise ValueError(f"reward_type {reward_type!r} names a reward twice ({', '.join(names)})")
    return tuple(names)


def reward_files(args) -> dict[str, str]:
    """{flag: its value} for each rl.py flag naming a file that the rewards of args.reward_type read, in order."""
    return {flag: getattr(args, flag) for name in check_reward_type(args.reward_type) for flag in REWARDS[name].files}


def reward_options(args) -> dict:
    """{flag: its value} for each rl.py option flag (not a file) that the rewards of args.reward_type read."""
    return {flag: getattr(args, flag) for name in check_reward_type(args.reward_type) for flag in REWARDS[name].options}


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


def sid_token_map(tokenizer, sid_index: dict[str, list[str]]) -> dict[int, str]:
    """Token id -> SID token, for every SID token of the index in the tokenizer's vocabulary (sid_from_ids' map)."""
    sid_tokens = {t for sid in sid_index.values() for t in sid}
    return {i: t for t, i in tokenizer.get_vocab().items() if t in sid_tokens}


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
                       device: str = "cpu", **flags) -> list:
    """The reward callables of `reward_type`, each entry's binder run once (embeddings / SASRec loaded only when
    needed). flags: the rl.py flags the entries name, files and options, e.g. item_embeddings_path="X.npy",
    prefix_reward_weights="0.2,0.5,1.0" (rl.py passes reward_files(args) and reward_options(args))."""
    names = check_reward_type(reward_type)
    unknown = set(flags) - {flag for entry in REWARDS.values() for flag in (*entry.files, *entry.options)}
    if unknown:
        raise TypeError(f"build_reward_funcs: no reward reads {', '.join(sorted(unknown))}")
    item_to_row, sid_to_row = item_rows(sid_index)
    levels = len(next(iter(sid_index.values()), []))  # load_sid_index: the same for every item
    ctx = RewardContext(num_generations, len(sid_index), item_to_row, sid_to_row, levels, device)
    id_to_sid_token = sid_token_map(tokenizer, sid_index) if tokenizer is not None else None
    funcs = []
    for name in names:
        entry = REWARDS[name]
        paths = [flags.get(flag, "") for flag in entry.files]
        for (flag, what), path in zip(entry.files.items(), paths, strict=True):
            if not path or not Path(path).is_file():
                raise ValueError(f"reward_type {name} needs --{flag} ({what}), got {path!r}")
        options = {flag: flags[flag] for flag in entry.options if flag in flags}
        funcs.append(_bind(name, entry.func, id_to_sid_token, **entry.bind(ctx, *paths, **options)))
    return funcs
