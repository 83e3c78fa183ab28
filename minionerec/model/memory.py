"""Per-GPU memory of a training run by arithmetic, for a real model shape (minionerec.model.shapes).

The rehearsal (minionerec.launch.rehearsal) prints it for the recipe's real model beside what its tiny stand-in ran;
bench/gpu_check.py sets it beside torch.cuda.max_memory_allocated when a GPU is lent. It is an estimate: bytes per
parameter for weights, gradients and Adam state by precision regime and ZeRO stage, activations of a decoder layer
by the tensors it keeps for the backward pass, and the KV cache of the rollout beam search. Not counted: the CUDA
context and allocator fragmentation (~1-3 GB), and temporaries inside one kernel.

Regimes (what sft.py / rl.py load, minionerec.model.loading.training_dtype):
    DDP or one GPU, full fine-tuning, bf16 autocast: fp32 weights (4 B/param), fp32 gradients (4), Adam (8)
    LoRA: the frozen base in bf16 (2 B/param); adapters and SID rows train in fp32 (16 B each)
    DeepSpeed ZeRO-2, bf16: bf16 weights (2); fp32 gradients, master weights and Adam sharded (16 / world)
    DeepSpeed ZeRO-3: as ZeRO-2 with the bf16 weights sharded too; offload moves master + Adam (and weights) to host
GRPO with beta > 0 and no LoRA keeps a bf16 reference copy (sharded only under ZeRO-3).
"""
from __future__ import annotations

from dataclasses import dataclass

from minionerec.model.shapes import Shape

GB = 1e9
BF16, FP32 = 2, 4


@dataclass
class Run:
    """What the memory depends on besides the shape (values per process)."""

    world: int  # processes
    zero_stage: int = 0  # 0: DDP / one GPU; 2; 3
    offload_optimizer: bool = False
    offload_params: bool = False
    lora_r: int = 0
    lora_targets: int = 7  # linear layers per decoder layer with adapters (all-linear: q k v o gate up down)
    train_only_new_tokens: bool = False  # sft.py --train_only_new_tokens: only the SID rows train
    sid_tokens: int = 768  # trainable embedding (and LM head) rows under LoRA / --train_only_new_tokens
    reference: bool = False  # GRPO beta > 0 without LoRA: a second bf16 copy
    checkpointing: bool = False
    micro: int = 1  # sequences per forward / backward pass
    tokens: int = 512  # tokens of the longest training sequence
    logit_positions: int = 6  # positions per sequence whose logits are computed (the answer window)
    rollout_sequences: int = 0  # sequences beam search decodes at once (RL: the process's completions of a step;
    # under ZeRO-3 the rollout phase also holds the gathered bf16 weights, TRL's ds3_gather_for_generation)
    rollout_tokens: int = 0  # prompt + answer tokens of a rollout sequence
    bucket_elements: float = 0  # DeepSpeed reduce + all-gather bucket elements (bf16), ZeRO-2/3


def trainable(shape: Shape, run: Run) -> int:
    """Parameters with gradients and optimizer state."""
    sid_rows = run.sid_tokens * shape.hidden_size * (1 if shape.tie_word_embeddings else 2)
    if run.lora_r:
        adapters = shape.num_layers * sum(a + b for a, b in shape.linear_shapes()[: run.lora_targets]) * run.lora_r
        return adapters + sid_rows
    return sid_rows if run.train_only_new_tokens else shape.parameters


def layer_activation_bytes(shape: Shape) -> int:
    """Bytes a decoder layer keeps per token for its backward pass (bf16): the attention block's input, norm output,
    q / k / v and attention output; the MLP's input, norm output, gate and up projections, the activation and the
    product. Memory-efficient attention (sdpa, flash) keeps no [tokens x tokens] matrix."""
    h, kv, i = shape.hidden_size, shape.kv_dim, shape.intermediate_size
    return BF16 * (6 * h + 2 * kv + 4 * i)


def estimate(shape: Shape, run: Run) -> dict[str, float]:
    """GB per GPU by component, and `total` = the states + the larger of the training and rollout phases."""
    p, t, w = shape.parameters, trainable(shape, run), run.world
    if run.lora_r:  # the frozen bf16 base (sharded under ZeRO-3); adapters + SID rows in fp32 with Adam
        weights, grads, optimizer = BF16 * p / (w if run.zero_stage == 3 else 1), FP32 * t, 2 * FP32 * t
    elif run.zero_stage >= 2:
        weights = BF16 * p / (w if run.zero_stage == 3 else 1)
        grads, optimizer = FP32 * t / w, 3 * FP32 * t / w  # fp32 gradient partition; master + Adam m, v
    else:  # DDP / one GPU: fp32 master weights, bf16 autocast
        weights, grads, optimizer = FP32 * p, FP32 * t, 2 * FP32 * t
    if run.offload_optimizer:
        optimizer = 0.0
    if run.offload_params and run.zero_stage == 3:
        weights = 0.0
    reference = BF16 * p / (w if run.zero_stage == 3 else 1) if run.reference else 0.0
    buckets = BF16 * min(run.bucket_elements, t) if run.zero_stage >= 2 else 0.0  # no bigger than the gradients
    per_token = layer_activation_bytes(shape)
    tokens = run.micro * run.tokens
    if run.checkpointing:  # each layer keeps its input; one layer at a time recomputes the rest
        activations = tokens * (shape.num_layers * BF16 * shape.hidden_size + per_token)
    else:
        activations = tokens * shape.num_layers * per_token
    logits = run.micro * run.logit_positions * shape.vocab_size * FP32 * 2  # fp32 logits and their gradient
    kv_cache = run.rollout_sequences * run.rollout_tokens * shape.num_layers * 2 * shape.kv_dim * BF16
    rollout = kv_cache + run.rollout_sequences * shape.vocab_size * FP32 * 2  # + each step's scores
    if run.zero_stage == 3 and run.rollout_sequences:  # generation gathers the whole bf16 model onto every GPU
        rollout += BF16 * p - weights
    parts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "reference model": reference,
             "ZeRO buckets": buckets, "activations": activations, "logits": logits, "rollout KV cache": rollout}
    parts = {k: v / GB for k, v in parts.items()}
    states = sum(parts[k] for k in ("weights", "gradients", "optimizer", "reference model", "ZeRO buckets"))
    parts["total"] = states + max(parts["activations"] + parts["logits"], parts["rollout KV cache"])
    return parts


def activations_without_checkpointing(shape: Shape, run: Run) -> float:
    """GB of activations the same micro-batch would keep without activation checkpointing (the report shows both)."""
    return run.micro * run.tokens * shape.num_layers * layer_activation_bytes(shape) / GB
