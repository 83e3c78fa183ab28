"""Shared by the training-step benchmarks (sft_step.py, rl_logps.py): their flags, a random
Qwen2 of a given shape, and the warm-up-then-average timer."""
from __future__ import annotations

import argparse
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def parse_args(doc: str, steps: int) -> argparse.Namespace:
    """--threads / --steps / --seed, then sets torch's intra-op threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per cell (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def random_qwen2(vocab: int, hidden: int, layers: int, seed: int) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 (4 heads, 2 KV heads, FFN 4 x hidden, tied embeddings), seeded."""
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        intermediate_size=4 * hidden, tie_word_embeddings=True))


def mean_ms(step, steps: int):
    """(mean ms of `steps` calls of step() after one warm-up call, the warm-up call's result)."""
    first = step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3, first
