"""RL prompt datasets: three tasks whose answer is a SID, as `datasets.Dataset`s for TRL.

Columns: `prompt` (what TRL generates from), `target` (the answer SID, passed to rewards),
`item_id`, `history_item_id` (for the semantic / SASRec rewards; empty for title -> SID) and `task`.
"""
from __future__ import annotations

import pandas as pd
from datasets import Dataset, Features, List, Value, concatenate_datasets

from minionerec import prompts
from minionerec.data import sid_string
from minionerec.sft_data import sample_rows

RL_TASKS = ("sid_history", "title2sid", "title_history")
# Explicit types: title -> SID rows have empty histories, which Arrow would otherwise type as null.
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


def task_rows(task: str, df: pd.DataFrame, sid_index: dict, item_meta: dict | None) -> dict[str, list]:
    if task == "sid_history":  # SID history -> next SID (also the evaluation task)
        return _split_rows(df, prompts.sid_history_prompt, "history_item_sid", task)
    if task == "title_history":  # title history -> next SID
        return _split_rows(df, prompts.title_history_sid_prompt, "history_item_title", task)
    if task == "title2sid":  # every catalogue item: its title -> its SID
        items = [i for i in sid_index if item_meta and i in item_meta]
        return {
            "prompt": [prompts.title2sid_prompt(item_meta[i]["title"]) for i in items],
            "target": [sid_string(sid_index[i]) for i in items],
            "item_id": items,
            "history_item_id": [[] for _ in items],
            "task": [task] * len(items),
        }
    raise ValueError(f"unknown RL task {task!r}; valid: {', '.join(RL_TASKS)}")


def build_rl_dataset(train_df: pd.DataFrame, sid_index: dict, item_meta: dict | None, title_history_sample: int,
                     seed: int, sample_train: bool = False, title2sid: bool = True) -> Dataset:
    """SID history -> SID on every row, title -> SID on every item (needs item_meta; `title2sid`
    False turns it off), title history -> SID on `title_history_sample` seeded rows (-1: all, 0: off);
    shuffled.

    `sample_train` keeps the last 80% of the shuffled prompts, as upstream does when continuing from
    an SFT model (the first 20% stand for prompts the SFT stage saw most recently).
    """
    parts = [task_rows("sid_history", train_df, sid_index, item_meta)]
    if item_meta and title2sid:
        parts.append(task_rows("title2sid", train_df, sid_index, item_meta))
    if title_history_sample != 0:
        parts.append(task_rows("title_history", sample_rows(train_df, title_history_sample, seed), sid_index, item_meta))
    dataset = concatenate_datasets([Dataset.from_dict(p, features=FEATURES) for p in parts]).shuffle(seed=seed)
    if sample_train:
        dataset = dataset.select(range(int(0.2 * len(dataset)), len(dataset)))
    return dataset


def build_eval_dataset(eval_df: pd.DataFrame) -> Dataset:
    return Dataset.from_dict(_split_rows(eval_df, prompts.sid_history_prompt, "history_item_sid", "sid_history"),
                             features=FEATURES)
