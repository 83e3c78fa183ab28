"""RL prompt datasets: tasks whose answer is a SID, as `datasets.Dataset`s for TRL.

Columns: `prompt` (what TRL generates from), `target` (the answer SID, passed to rewards),
`item_id`, `history_item_id` (for the semantic / SASRec rewards; empty for catalogue tasks) and `task`.
Prompt texts follow the style of `prompts` (upstream: SidDataset, RLTitle2SidDataset, RLSeqTitle2SidDataset).
"""
from __future__ import annotations

import ast

import pandas as pd
from datasets import Dataset, Features, List, Value, concatenate_datasets

from minionerec.data.formats import sid_string
from minionerec.data.prompts import UPSTREAM, Prompts
from minionerec.data.sft_tasks import sample_dataset, sample_rows

RL_TASKS = ("sid_history", "title2sid", "description2sid", "title_history")
# Explicit types: catalogue rows have empty histories, which Arrow would otherwise type as null.
FEATURES = Features({"prompt": Value("string"), "target": Value("string"), "item_id": Value("string"),
                     "history_item_id": List(Value("string")), "task": Value("string")})


def _split_rows(df: pd.DataFrame, prompt_fn, history_col: str, task: str) -> dict[str, list]:
    return {
        "prompt": [prompt_fn(h) for h in df[history_col]],
        "target": list(df["item_sid"]),
        "item_id": [str(i) for i in df["item_id"]],
        "history_item_id": [list(map(str, h)) for h in df["history_item_id"]],
        "task": [task] * len(df),
    }


def _catalogue_rows(pairs: list[tuple[str, str, str]], task: str) -> dict[str, list]:
    """(prompt, target SID, item id) triples -> columns."""
    return {"prompt": [p for p, _, _ in pairs], "target": [t for _, t, _ in pairs], "item_id": [i for _, _, i in pairs],
            "history_item_id": [[] for _ in pairs], "task": [task] * len(pairs)}


def item_description(info: dict) -> str:
    """Upstream RLTitle2SidDataset: a description stored as a list literal "['...']" means its first entry."""
    text = info.get("description", "")
    if isinstance(text, str) and text.startswith("['") and text.endswith("']"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return str(parsed[0]) if isinstance(parsed, list) and parsed else text
    return text if isinstance(text, str) else ""


def _keyed_last(items: list[str], key_of, sid_index: dict) -> list[tuple[str, str, str]]:
    """One row per distinct key (upstream builds a dict: first key order, last item's SID wins)."""
    rows: dict[str, tuple[str, str]] = {}
    for i in items:
        rows[key_of(i)] = (sid_string(sid_index[i]), i)
    return [(k, sid, i) for k, (sid, i) in rows.items()]


def task_rows(task: str, df: pd.DataFrame, sid_index: dict, item_meta: dict | None,
              prompts: Prompts = UPSTREAM) -> dict[str, list]:
    if task == "sid_history":  # SID history -> next SID (also the in-training evaluation task)
        return _split_rows(df, prompts.rl_sid_history, "history_item_sid", task)
    if task == "title_history":  # title history -> next SID
        return _split_rows(df, prompts.rl_title_history, "history_item_title", task)
    items = [i for i in sid_index if item_meta and i in item_meta]
    if task == "title2sid":  # catalogue: title -> SID (upstream: one row per distinct title)
        if prompts.upstream:
            rows = _keyed_last(items, lambda i: item_meta[i]["title"], sid_index)
        else:
            rows = [(item_meta[i]["title"], sid_string(sid_index[i]), i) for i in items]
        return _catalogue_rows([(prompts.rl_title2sid(t), sid, i) for t, sid, i in rows], task)
    if task == "description2sid":  # catalogue: description -> SID, one row per distinct non-empty description
        rows = _keyed_last([i for i in items if item_description(item_meta[i]).strip()],
                           lambda i: item_description(item_meta[i]), sid_index)
        return _catalogue_rows([(prompts.rl_description2sid(d), sid, i) for d, sid, i in rows], task)
    raise ValueError(f"unknown RL task {task!r}; valid: {', '.join(RL_TASKS)}")


def build_rl_dataset(train_df: pd.DataFrame, sid_index: dict, item_meta: dict | None, title_history_sample: int,
                     seed: int, sample_train: bool = False, title2sid: bool = True,
                     prompts: Prompts = UPSTREAM, sample: int = -1) -> Dataset:
    """SID history -> SID on every row, title -> SID on every item (needs item_meta; `title2sid`
    False turns it off; the upstream style adds description -> SID with it, as upstream's
    RLTitle2SidDataset does), title history -> SID on `title_history_sample` seeded rows (-1: all,
    0: off; more than the rows means all, where upstream crashes); shuffled.

    `sample_train` keeps the last 80% of the shuffled prompts, as upstream does when continuing from
    an SFT model (the first 20% stand for prompts the SFT stage saw most recently). `sample` >= 0 keeps at most that
    many seeded prompts of each task (quick runs, rehearsals).
    """
    parts = [task_rows("sid_history", train_df, sid_index, item_meta, prompts)]
    if item_meta and title2sid:
        parts.append(task_rows("title2sid", train_df, sid_index, item_meta, prompts))
        if prompts.upstream:
            parts.append(task_rows("description2sid", train_df, sid_index, item_meta, prompts))
    if title_history_sample != 0:
        parts.append(task_rows("title_history", sample_rows(train_df, title_history_sample, seed), sid_index,
                               item_meta, prompts))
    dataset = concatenate_datasets([sample_dataset(Dataset.from_dict(p, features=FEATURES), sample, seed)
                                    for p in parts]).shuffle(seed=seed)
    if sample_train:
        dataset = dataset.select(range(int(0.2 * len(dataset)), len(dataset)))
    return dataset


def build_eval_dataset(eval_df: pd.DataFrame, prompts: Prompts = UPSTREAM) -> Dataset:
    """The in-training evaluation set: upstream evaluates RL on SidDataset prompts (no preamble)."""
    return Dataset.from_dict(_split_rows(eval_df, prompts.rl_sid_history, "history_item_sid", "sid_history"),
                             features=FEATURES)
