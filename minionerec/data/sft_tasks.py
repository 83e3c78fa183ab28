"""SFT tasks as `datasets.Dataset`s: text columns first, tokenised with `map`.

Every task yields rows {"prompt", "response"}; `tokenize_dataset` turns them into input_ids /
labels with the prompt masked (-100), so only the answer and EOS are learnt. `build_token_datasets` makes the
same rows one task at a time, written to disk as they are made (sft.py, through minionerec.data.sft_cache).
"""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset, Features, List, Value, concatenate_datasets

from minionerec.data.formats import sid_string
from minionerec.data.piece_tokens import PieceTokenizer
from minionerec.data.prompts import NUM_TITLE_HISTORY_INSTRUCTIONS, UPSTREAM, Prompts, response_text as answer
from minionerec.run.preflight import prompt_tail

TASKS = ("sid_history", "item_alignment", "sid_history_title", "title_history_title", "title_history_sid")


def item_alignment_pairs(sid_index: dict, item_meta: dict, upstream: bool) -> tuple[list, list]:
    """(title -> SID pairs, SID -> title pairs) over the catalogue.

    Upstream's SidItemFeatDataset keys two dicts by SID and by title, so a SID shared by several items
    keeps the last item's title and a title shared by several items keeps the last SID (index order),
    and its rows are all SID -> title, then all title -> SID. The minionerec style keeps every item.
    """
    pairs = [(item_meta[i]["title"], sid_string(sid)) for i, sid in sid_index.items() if i in item_meta]
    if not upstream:
        return pairs, [(s, t) for t, s in pairs]
    sid2title = {s: t for t, s in pairs}
    title2sid = {t: s for t, s in pairs}
    return list(title2sid.items()), list(sid2title.items())


def task_rows(task: str, df: pd.DataFrame, sid_index: dict | None, item_meta: dict | None,
              prompts: Prompts = UPSTREAM, seed: int = 0) -> dict[str, list[str]]:
    """Prompt/response texts of one task. Sequence tasks read the split; alignment reads the catalogue."""
    if task == "sid_history":  # (a)
        return {"prompt": [prompts.sid_history(h) for h in df["history_item_sid"]],
                "response": [answer(a) for a in df["item_sid"]]}
    if task == "sid_history_title":  # (c); upstream FusionSeqRecDataset answers with its SID -> title dict
        titles = list(df["item_title"])
        if prompts.upstream and sid_index and item_meta:
            sid2title = dict(item_alignment_pairs(sid_index, item_meta, upstream=True)[1])
            titles = [sid2title.get(s, t) for s, t in zip(df["item_sid"], titles)]
        return {"prompt": [prompts.sid_history_title(h) for h in df["history_item_sid"]],
                "response": [answer(t) for t in titles]}
    if task == "title_history_title":  # (d); upstream SFTData draws one of its instructions per row, seeded
        rng = random.Random(seed)
        variants = [rng.randint(0, NUM_TITLE_HISTORY_INSTRUCTIONS - 1) for _ in range(len(df))]
        return {"prompt": [prompts.title_history_title(h, v) for h, v in zip(df["history_item_title"], variants)],
                "response": [answer(prompts.title_history_title_answer(t)) for t in df["item_title"]]}
    if task == "title_history_sid":  # (e)
        return {"prompt": [prompts.title_history_sid(h) for h in df["history_item_title"]],
                "response": [answer(a) for a in df["item_sid"]]}
    if task == "item_alignment":  # (b): title -> SID and SID -> title over the catalogue
        title2sid, sid2title = item_alignment_pairs(sid_index, item_meta, prompts.upstream)
        t2s = {"prompt": [prompts.title2sid(t) for t, _ in title2sid], "response": [answer(s) for _, s in title2sid]}
        s2t = {"prompt": [prompts.sid2title(s) for s, _ in sid2title], "response": [answer(t) for _, t in sid2title]}
        first, second = (s2t, t2s) if prompts.upstream else (t2s, s2t)
        return {k: first[k] + second[k] for k in ("prompt", "response")}
    raise ValueError(f"unknown SFT task {task!r}; valid: {', '.join(TASKS)}")


def build_text_dataset(tasks: list[str], df: pd.DataFrame, sid_index=None, item_meta=None, seed: int = 0,
                       prompts: Prompts = UPSTREAM, sample: int = -1) -> Dataset:
    """All enabled tasks, concatenated and shuffled, with a `task` column for inspection. `sample` >= 0 keeps at most
    that many seeded rows of each task, as upstream passes `sample` to every dataset (the catalogue's included)."""
    parts = []
    for task in tasks:
        rows = task_rows(task, df, sid_index, item_meta, prompts, seed)
        parts.append(sample_dataset(Dataset.from_dict({**rows, "task": [task] * len(rows["prompt"])}), sample, seed))
    return concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0]


TOKENS = Features({"input_ids": List(Value("int32")), "labels": List(Value("int32"))})  # vocabularies < 2^31


def tokenize_dataset(ds: Dataset, tokenizer, cutoff_len: int, cache_file_name: str | None = None) -> Dataset:
    """prompt + response + EOS -> input_ids and labels (prompt masked with -100), int32 (a 1M-row split's rows
    are ~3 GB as int64). No attention_mask: every token of a row is real, and the collators build the batch's.

    Sequences longer than cutoff_len keep their *end*, like upstream: the answer is never cut. With
    `cache_file_name` the rows are written there as they are made (Arrow, memory-mapped) instead of kept in memory.
    """
    eos = tokenizer.eos_token_id
    pieces = PieceTokenizer(tokenizer)
    first = ds[:1000]  # the first rows only: ds["prompt"] would read the whole column
    encoder = pieces if pieces.matches_tokenizer(first["prompt"] + first["response"]) else pieces.plain

    def encode(batch):
        prompt_ids, answer_ids = encoder(batch["prompt"]), encoder(batch["response"])
        out = {"input_ids": [], "labels": []}
        for p, a in zip(prompt_ids, answer_ids):
            out["input_ids"].append((p + a + [eos])[-cutoff_len:])
            out["labels"].append(([-100] * len(p) + a + [eos])[-cutoff_len:])
        return out

    return ds.map(encode, batched=True, batch_size=10_000, remove_columns=ds.column_names, features=TOKENS,
                  desc="tokenising", cache_file_name=cache_file_name)


def build_token_datasets(tasks: list[str], df: pd.DataFrame, sid_index, item_meta, seed: int, prompts: Prompts,
                         sample: int, tokenizer, cutoff_len: int, scratch: str | None = None,
                         answers: set | None = None, tails: set | None = None) -> Dataset:
    """The rows of `tokenize_dataset(build_text_dataset(...))`, task by task: one task's texts in memory at a time,
    its tokens written to `scratch` (a directory) as they are made. The same rows in the same order (the shuffle
    depends only on the seed and the row count; test_sft_tasks.py). `answers` / `tails` collect each distinct
    response and prompt tail for preflight.cutoff_holds_answers."""
    parts = []
    if scratch:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    for task in tasks:
        texts = sample_dataset(Dataset.from_dict(task_rows(task, df, sid_index, item_meta, prompts, seed)), sample, seed)
        if answers is not None:
            answers.update(texts["response"])
            tails.update(prompt_tail(p) for p in texts["prompt"])
        cache = str(Path(scratch, f"{task}.arrow")) if scratch else None
        parts.append(tokenize_dataset(texts, tokenizer, cutoff_len, cache_file_name=cache))
    return concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0]


def sampled_positions(n: int, sample: int, seed: int) -> list[int] | None:
    """`sample` positions of 0..n-1 from a seeded shuffle, in order; None when every row is kept (-1, or >= n)."""
    if sample is None or sample < 0 or sample >= n:
        return None
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:sample])


def sample_rows(df: pd.DataFrame, sample: int, seed: int) -> pd.DataFrame:
    """The first `sample` rows of a seeded shuffle (-1 keeps all), as upstream's `sample` flag."""
    keep = sampled_positions(len(df), sample, seed)
    return df if keep is None else df.iloc[keep].reset_index(drop=True)


def sample_dataset(ds: Dataset, sample: int, seed: int) -> Dataset:
    """The same seeded sample of a `datasets.Dataset`'s rows."""
    keep = sampled_positions(len(ds), sample, seed)
    return ds if keep is None else ds.select(keep)


# SFT batches whose logits cover only the answer window.
#
# SFT learns only the answer (a SID is 3 tokens + "\\n" + EOS) after a ~90-token prompt, yet a causal LM
# head computes logits at every position: [B, L, V] floats, with Qwen's V = 151,936 most of the step's
# memory and, on small models, most of its FLOPs. Left padding puts every row's answer at the end of
# the batch, so `logits_to_keep=k` (transformers' "last k positions") covers all answers, and the
# labels are cut to the same k positions. The loss and gradients equal the right-padded full-logits
# reference (tests/unit/test_sft_tasks_collator.py); `bench/sft_step.py` times both. minionerec/data/packing.py
# drops the padding altogether (sft.py --packing).


class AnswerWindowCollator:
    """Left-pads `input_ids` / `labels` rows and adds `logits_to_keep` and `position_ids`.

    Output tensors: input_ids, attention_mask, position_ids [B, L]; labels [B, k], where k - 1 is
    the longest answer (first labelled token to the end) in the batch. The logit at window position
    j predicts the label at j + 1, so the window starts one token before the earliest answer.
    `position_ids` count from 0 at each row's first real token, as with right padding. A row's first
    token is never a target (as in the reference): the position before it is padding, not its row.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        lengths = [len(f["input_ids"]) for f in features]
        width = -(-max(lengths) // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        answer = 1
        for row, (f, n) in enumerate(zip(features, lengths)):
            input_ids[row, width - n:] = torch.as_tensor(f["input_ids"])
            labels[row, width - n + 1:] = torch.as_tensor(f["labels"][1:])
            attention_mask[row, width - n:] = 1
            labelled = [i for i, y in enumerate(f["labels"]) if y != -100 and i > 0]
            if labelled:
                answer = max(answer, n - labelled[0])
        keep = min(answer + 1, width)  # one more logit: the prompt's last token predicts the answer's first
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                "labels": labels[:, -keep:], "logits_to_keep": keep}
