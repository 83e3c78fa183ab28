"""Evaluation plumbing shared by evaluate.py: batching, sharding over processes, gathering, baselines.

Sharding is by *batch*, not by row: the rows are sorted by prompt length and cut into batches once,
globally, and process r takes batches r, r + N, r + 2N, ... Each batch therefore has the same rows
(hence the same padding and the same arithmetic) whatever the number of processes, which is what
makes N processes give exactly the 1-process predictions.
"""
from __future__ import annotations

from collections import Counter

from minionerec.ranking.constrained import SIDTrie, constrained_beam_search


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


def auto_batch_size(model_config, dtype_bytes: int, num_beams: int, sequence_len: int, free_bytes: int | None,
                    cpu_default: int = 8, max_batch: int = 256) -> int:
    """Prompts per beam-search call that fill `free_bytes` of device memory (None: CPU -> cpu_default).

    Per beam row: the KV cache, 2 x layers x kv_heads x head_dim x sequence_len values in the
    weights' dtype (`dtype_bytes`), counted twice (beam reordering copies it), plus ~5 fp32 [vocab] rows of scores
    (logits, log-softmax, the constraint's output, top-k candidates). Half the free memory is
    budgeted: activations and the allocator's fragmentation take the rest.
    """
    if free_bytes is None:
        return cpu_default
    c = model_config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    kv_row = 2 * c.num_hidden_layers * kv_heads * head_dim * sequence_len * dtype_bytes
    per_prompt = num_beams * (2 * kv_row + 5 * 4 * c.vocab_size)
    return max(1, min(max_batch, int(free_bytes * 0.5) // per_prompt))


def smallest_over_processes(value: int, device) -> int:
    """The minimum of `value` over all processes: every rank must cut the same global batches."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())
