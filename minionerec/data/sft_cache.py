"""SFT's tokenised rows, built once and memory-mapped by every process and every later run with the same inputs.

sft.py's data stage (parse the splits, write each task's prompt/response texts, tokenise them) takes minutes and
gigabytes per million train rows, and each process of a launch repeated it: 8 processes on a node, 8 times the
time and memory. Now the first process to arrive builds an Arrow dataset (`datasets.save_to_disk`) in
`<cache dir>/sft/<key>/`; the others wait on the entry's lock (minionerec.run.file_lock) and memory-map it
(`datasets.load_from_disk`: the pages are the OS page cache's, shared by every process of the machine). A later
run with the same inputs reads it too.

The key is a SHA-256 over everything the rows depend on (`key_inputs`): the bytes of the train / eval CSVs,
index.json and item.json, the enabled tasks, prompt style and category, seed, --sample, --cutoff_len, the tokenizer
with its SID tokens (its whole serialisation: vocabulary, merges, added tokens) and FORMAT, raised whenever the
build changes what it writes. Change one input row and the key changes: a new build, never stale rows. An entry is
written to a temporary sibling and renamed whole, so a killed build leaves no entry (its temporary is removed by the
next builder, which holds the lock). Entries are never modified; delete the directory to reclaim the space.

    --data_cache_dir auto   $MINIONEREC_CACHE/sft, else ~/.cache/minionerec/sft (the default)
    --data_cache_dir DIR    DIR (give every node's processes a directory they all see, or one per node)
    --data_cache_dir ""     no cache: every process builds the rows in memory
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, load_from_disk

from minionerec.run.atomic import atomic_dir
from minionerec.run.file_lock import locked

FORMAT = 1  # raise when build_token_datasets' output changes for the same inputs


def cache_dir(flag: str) -> Path | None:
    """--data_cache_dir -> the directory entries live in, or None (no cache)."""
    if flag == "":
        return None
    if flag == "auto":
        root = os.environ.get("MINIONEREC_CACHE") or Path.home() / ".cache" / "minionerec"
        return Path(root, "sft")
    return Path(flag)


def file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """What tokenising depends on: a fast tokenizer's whole serialisation (added tokens included) and its EOS."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{text}\n{tokenizer.eos_token_id}".encode()).hexdigest()


def key_inputs(files: dict[str, str], tokenizer, **settings) -> dict:
    """The key's inputs as plain data: each file's digest (by flag), the tokenizer's, the settings, FORMAT."""
    return {"format": FORMAT, "files": {flag: file_digest(path) if path else "" for flag, path in files.items()},
            "tokenizer": tokenizer_digest(tokenizer), **settings}


def token_counts(dataset: Dataset) -> np.ndarray:
    """Tokens of each row [rows], read from the Arrow list offsets (no row is decoded)."""
    return pc.list_value_length(dataset.data.column("input_ids")).to_numpy(zero_copy_only=False)[
        dataset._indices.column(0).to_numpy() if dataset._indices is not None else slice(None)]


@dataclass
class Prepared:
    train: Dataset  # input_ids, labels (int32), memory-mapped when cached
    eval: Dataset | None
    source: str  # where the rows came from, for the log line
    seconds: float


def prepare(root: Path | None, inputs: dict, build: Callable[[str | None], tuple[Dataset, Dataset | None]]
            ) -> Prepared:
    """The cached rows of `inputs`, built by `build(scratch_dir)` when no process has built them yet; without a
    cache directory, `build(None)` in memory."""
    started = time.perf_counter()
    if root is None:
        train, evaluation = build(None)
        return Prepared(train, evaluation, "built in memory (--data_cache_dir '')", time.perf_counter() - started)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]
    entry = root / key
    root.mkdir(parents=True, exist_ok=True)
    with locked(entry, wait=True):  # one builder; the others wait here, then read what it wrote
        built = not (entry / "inputs.json").is_file()
        if built:
            with atomic_dir(entry) as tmp:
                train, evaluation = build(str(tmp / "scratch"))  # per-task files, shuffled: saved whole below
                train.save_to_disk(str(tmp / "train"))
                if evaluation is not None:
                    evaluation.save_to_disk(str(tmp / "eval"))
                shutil.rmtree(tmp / "scratch", ignore_errors=True)
                (tmp / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True))
    train = load_from_disk(str(entry / "train"))
    evaluation = load_from_disk(str(entry / "eval")) if (entry / "eval").is_dir() else None
    return Prepared(train, evaluation, f"{'built into' if built else 'read from'} {entry}",
                    time.perf_counter() - started)
