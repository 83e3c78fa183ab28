"""Evaluation plumbing shared by evaluate.py: batching, sharding over processes, gathering, baselines.

Sharding is by *batch*, not by row: the rows are sorted by prompt length and cut into batches once,
globally, and process r takes batches r, r + N, r + 2N, ... Each batch therefore has the same rows
(hence the same padding and the same arithmetic) whatever the number of processes, which is what
makes N processes give exactly the 1-process predictions.
"""
from __future__ import annotations

from collections import Counter

from minionerec.constrained import SIDTrie, constrained_beam_search


def make_batches(prompt_lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar prompt length (less padding), deterministic."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: (prompt_lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shard(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    return batches[rank::world_size]


def predict_batches(model, tokenizer, prompts: list[str], batches: list[list[int]], trie: SIDTrie, num_beams: int,
                    max_new_tokens: int | None, length_penalty: float, progress: bool = False) -> dict[int, list[str]]:
    """{row index: ranked SID list} for the given batches (one generate call per batch)."""
    out = {}
    iterator = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="beam search", unit="batch")
    for batch in iterator:
        beams = constrained_beam_search(model, tokenizer, [prompts[i] for i in batch], trie, num_beams=num_beams,
                                        max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                                        batch_size=len(batch))
        out.update(zip(batch, beams))
    return out


def popularity_ranking(train_targets: list[str], k: int) -> list[str]:
    """The k SIDs that are most often the next item in train (ties: first seen first)."""
    return [sid for sid, _ in Counter(train_targets).most_common(k)]
