"""SFT tasks as `datasets.Dataset`s: text columns first, tokenised with `map`.

Every task yields rows {"prompt", "response"}; `tokenize_dataset` turns them into input_ids /
labels with the prompt masked (-100), so only the answer and EOS are learnt.
"""
from __future__ import annotations

import random

import pandas as pd
from datasets import Dataset, concatenate_datasets

from minionerec import prompts
from minionerec.data import sid_string

TASKS = ("sid_history", "item_alignment", "sid_history_title", "title_history_title", "title_history_sid")


def _rows(df: pd.DataFrame, prompt_fn, history_col: str, answer_col: str) -> dict[str, list[str]]:
    return {
        "prompt": [prompt_fn(h) for h in df[history_col]],
        "response": [prompts.response_text(a) for a in df[answer_col]],
    }


def task_rows(task: str, df: pd.DataFrame, sid_index: dict | None, item_meta: dict | None) -> dict[str, list[str]]:
    """Prompt/response texts of one task. Sequence tasks read the split; alignment reads the catalogue."""
    if task == "sid_history":  # (a)
        return _rows(df, prompts.sid_history_prompt, "history_item_sid", "item_sid")
    if task == "sid_history_title":  # (c)
        return _rows(df, prompts.sid_history_title_prompt, "history_item_sid", "item_title")
    if task == "title_history_title":  # (d)
        return _rows(df, prompts.title_history_title_prompt, "history_item_title", "item_title")
    if task == "title_history_sid":  # (e)
        return _rows(df, prompts.title_history_sid_prompt, "history_item_title", "item_sid")
    if task == "item_alignment":  # (b): title -> SID and SID -> title for every catalogue item
        pairs = [(item_meta[i]["title"], sid_string(sid)) for i, sid in sid_index.items() if i in item_meta]
        return {
            "prompt": [prompts.title2sid_prompt(t) for t, _ in pairs] + [prompts.sid2title_prompt(s) for _, s in pairs],
            "response": [prompts.response_text(s) for _, s in pairs] + [prompts.response_text(t) for t, _ in pairs],
        }
    raise ValueError(f"unknown SFT task {task!r}; valid: {', '.join(TASKS)}")


def build_text_dataset(tasks: list[str], df: pd.DataFrame, sid_index=None, item_meta=None, seed: int = 0) -> Dataset:
    """All enabled tasks, concatenated and shuffled, with a `task` column for inspection."""
    parts = []
    for task in tasks:
        rows = task_rows(task, df, sid_index, item_meta)
        parts.append(Dataset.from_dict({**rows, "task": [task] * len(rows["prompt"])}))
    return concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0]


def tokenize_dataset(ds: Dataset, tokenizer, cutoff_len: int) -> Dataset:
    """prompt + response + EOS -> input_ids, attention_mask, labels (prompt masked with -100).

    Sequences longer than cutoff_len keep their *end*, like upstream: the answer is never cut.
    """
    eos = tokenizer.eos_token_id

    def encode(batch):
        prompt_ids = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for p, a in zip(prompt_ids, answer_ids):
            ids = (p + a + [eos])[-cutoff_len:]
            labels = ([-100] * len(p) + a + [eos])[-cutoff_len:]
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenising")


def sample_rows(df: pd.DataFrame, sample: int, seed: int) -> pd.DataFrame:
    """The first `sample` rows of a seeded shuffle (-1 keeps all), as upstream's `sample` flag."""
    if sample is None or sample < 0 or sample >= len(df):
        return df
    order = list(range(len(df)))
    random.Random(seed).shuffle(order)
    return df.iloc[sorted(order[:sample])].reset_index(drop=True)
