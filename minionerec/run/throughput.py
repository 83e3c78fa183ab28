"""Training throughput: real (non-padding) tokens per second and model FLOPs utilisation (MFU).

A forward pre-hook on the model adds each training batch's real tokens (the attention mask's ones;
every token of a packed row, which has no mask and no padding: minionerec/data/packing.py) to a
counter on the device, so counting never waits for the GPU (the Trainer's own
`include_num_input_tokens_seen` calls .item() every step, which stops the CPU from queueing the next
step while the GPU works). The callback times optimizer steps after a warm-up (the first steps pay
for CUDA context, kernel selection and allocator growth) and turns tokens/s into MFU with the 6N rule:

    train FLOPs per token = 6 x (parameters of the transformer blocks)        matmuls, fwd + bwd
                          + 12 x layers x hidden x mean sequence length       attention scores

The embedding and LM head are left out: SFT computes logits only over the answer window
(minionerec/data/sft_tasks.py), so counting a full LM head would credit work that is never done. The
figure is therefore a slight under-estimate of the usual definition.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from minionerec.run.atomic import atomic_write_text

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
                   "L40S": 362e12, "A10G": 70e12, "4090": 165e12, "3090": 71e12}


def peak_flops(device_name: str) -> float | None:
    """The card's bf16 peak, or None when the card is not in the table (MFU is then not reported)."""
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in device_name), None)


def train_flops_per_token(config, mean_seq_len: float) -> float:
    """6N over the decoder blocks plus the attention-score term (see the module docstring)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attn = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden  # q, k, v, o projections
    mlp = 3 * hidden * config.intermediate_size  # gate, up, down (SwiGLU)
    return 6 * layers * (attn + mlp) + 12 * layers * hidden * mean_seq_len


class ThroughputCallback(TrainerCallback):
    """Times steps after `warmup_steps` and reports tokens/s and MFU at the end of training.

    Results land in `self.result` (and `output_dir/throughput.json` on the main process when
    `output_dir` is given). Steps are timed with a CUDA synchronise so that queued kernels count.
    """

    def __init__(self, model, warmup_steps: int = 2, output_dir: str | None = None):
        self.config = model.config
        self.warmup_steps = warmup_steps
        self.output_dir = output_dir
        self.result: dict = {}
        self._start = None  # (time, tokens seen, step) when timing began
        self._tokens = None  # 0-dim int64 tensor on the model's device: real tokens of training forwards
        model.register_forward_pre_hook(self._count_tokens, with_kwargs=True)

    def _count_tokens(self, module, args, kwargs):
        mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
        if not module.training or (mask is None and ids is None):
            return
        # new_full fills on the device: no host-to-device copy, no sync
        real = mask.sum() if mask is not None else ids.new_full((), ids.numel())
        self._tokens = real if self._tokens is None else self._tokens + real

    def _tokens_seen(self) -> int:
        """This process's count, summed over processes (a collective: every rank reaches it)."""
        tokens = self._tokens.clone() if self._tokens is not None else torch.zeros((), dtype=torch.int64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(tokens)
        return int(tokens)

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps and self._start is None:
            self._start = (self._now(), self._tokens_seen(), state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self._start is None or state.global_step <= self._start[2]:
            return  # too few steps to time after the warm-up
        t0, tokens0, step0 = self._start
        seconds, tokens, steps = self._now() - t0, self._tokens_seen() - tokens0, state.global_step - step0
        world = max(args.world_size, 1)
        tokens_per_s = tokens / seconds
        mean_len = tokens / (steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * world)
        per_gpu_flops = train_flops_per_token(self.config, mean_len) * tokens_per_s / world
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        peak = peak_flops(device) if torch.cuda.is_available() else None
        self.result = {
            "timed_steps": steps, "seconds": round(seconds, 3), "tokens": int(tokens),
            "tokens_per_s": round(tokens_per_s, 1), "mean_seq_len": round(mean_len, 1),
            "tflops_per_gpu": round(per_gpu_flops / 1e12, 2), "device": device, "processes": world,
            "mfu": round(per_gpu_flops / peak, 4) if peak else None,
        }
        if self.output_dir and state.is_world_process_zero:
            atomic_write_text(Path(self.output_dir, "throughput.json"), json.dumps(self.result, indent=1))


def peak_gpu_memory() -> dict | None:
    """This process's peak GPU memory (torch's allocator: allocated and reserved, GB), or None without CUDA. sft.py and
    rl.py write rank 0's to output_dir/gpu_memory.json; bench/gpu_check.py sets it beside the arithmetic of
    minionerec.model.memory."""
    if not torch.cuda.is_available():
        return None
    return {"device": torch.cuda.get_device_name(), "max_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
            "max_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2)}
