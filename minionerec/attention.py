"""Left padding without NaN gradients: no query row of an sdpa attention mask is ever fully masked.

Every batch here is left-padded (SFT's answer-window collator, GRPO's prompts, beam search), so a
pad position's query may attend to no key at all. transformers 5 hands such rows to
`torch.nn.functional.scaled_dot_product_attention` as they are; on an H200 (torch 2.11, bf16) the
memory-efficient kernel's backward then returned NaN gradients on some batches: a random-weight
Qwen2.5-0.5B-shaped SFT run hit a non-finite gradient at step 50 with sdpa and none in 120 steps
with eager attention (bench/gpu_check.py, 2026-11-26), and every later weight was NaN.

The fix is the one transformers 4.x applied for the same kernel: a fully masked row attends to every
key instead. Such rows are padding: their outputs never reach a real token (real queries still
mask pad keys) or the loss, so real logits and gradients are unchanged (tests/test_attention.py).
Importing this module registers the mask function under transformers' "sdpa" name, so every sdpa
model of the process uses it, the reference model and evaluation included.
"""
from __future__ import annotations

import torch
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


def padding_safe_sdpa_mask(*args, **kwargs) -> torch.Tensor | None:
    """transformers' sdpa_mask, then rows without any allowed key get all keys. Shape [B, 1, Q, KV], bool."""
    mask = sdpa_mask(*args, **kwargs)
    if mask is None:  # no padding: sdpa's own is_causal path
        return None
    return mask | ~mask.any(dim=-1, keepdim=True)


AttentionMaskInterface.register("sdpa", padding_safe_sdpa_mask)
