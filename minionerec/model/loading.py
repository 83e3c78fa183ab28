"""Loading a causal LM + tokenizer from a local directory and giving it the SID vocabulary.

Importing this module also registers a padding-safe sdpa attention mask (see the end of the file).
"""
from __future__ import annotations

import contextlib
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VOCAB_MULTIPLE = 64  # embedding / LM-head rows are padded to this: aligned GEMMs for the [tokens, vocab] head


def load_tokenizer(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # Qwen base checkpoints ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


REHEARSAL = "MINIONEREC_REHEARSAL"  # "1" in a CPU rehearsal of a GPU run (minionerec.launch.rehearsal)


def best_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """bf16 where the accelerator supports it, fp32 otherwise (CPU bf16 matmuls are slow); bf16 in a rehearsal,
    which runs on the CPU what a bf16 GPU would."""
    if os.environ.get(REHEARSAL) == "1" or (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float32


def cpu_bf16() -> bool:
    """bf16 on a machine without CUDA: only a rehearsal asks for it (TrainingArguments then needs use_cpu=True)."""
    return best_dtype() == torch.bfloat16 and not torch.cuda.is_available()


def training_dtype(training_args, lora: bool = False) -> torch.dtype:
    """Weight dtype to load for training with these TrainingArguments / GRPOConfig.

    bf16 when training in bf16 under DeepSpeed (its engine keeps bf16 weights and fp32 master copies
    itself) or with LoRA (the base is frozen; peft keeps adapters in fp32). fp32 otherwise: plain
    DDP / single-device bf16 is autocast, which needs fp32 weights for its optimizer.
    """
    if training_args.bf16 and (training_args.deepspeed_plugin is not None or lora):
        return torch.bfloat16
    return torch.float32


def enable_tf32() -> None:
    """TF32 tensor cores for the fp32 matmuls left (Ampere and newer; no-op elsewhere)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def load_model(path, dtype: torch.dtype | None = None, from_scratch: bool = False, device=None,
               attn_implementation: str = "sdpa"):
    """`from_scratch` keeps the architecture of `path` but starts from random weights.

    `device`: load the weights straight onto it (no full CPU copy first). Under ZeRO-3 (a
    TrainingArguments / GRPOConfig with a stage-3 DeepSpeed config built before this call),
    from_pretrained partitions the weights as they load (zero.Init): no rank holds the whole model.
    """
    dtype = dtype or best_dtype()
    enable_tf32()
    if from_scratch:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    device_map = {"": str(device)} if device is not None and not is_deepspeed_zero3_enabled() else None
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map,
                                                attn_implementation=attn_implementation)


def missing_sid_tokens(tokenizer, tokens: list[str]) -> list[str]:
    """SID tokens the tokenizer does not hold as one id."""
    vocab = tokenizer.get_vocab()
    return [t for t in tokens if t not in vocab]


def add_sid_tokens(model, tokenizer, tokens: list[str]) -> int:
    """Add missing SID tokens as normal (non-special) tokens and grow the embeddings to match.

    Normal, not special: TRL and `decode(skip_special_tokens=True)` strip special tokens, which
    would erase the very SIDs we predict. Returns how many tokens were added.
    """
    added = tokenizer.add_tokens(missing_sid_tokens(tokenizer, tokens))
    grow_vocabulary(model, len(tokenizer))
    return added


def sid_token_ids(tokenizer, tokens: list[str]) -> list[int]:
    """Row indices of the SID tokens in the embedding and LM head."""
    return tokenizer.convert_tokens_to_ids(tokens)


def _gathered(params, modifier_rank=None):
    """Under ZeRO-3, the full tensors of `params` inside the block (rank `modifier_rank`'s writes are kept)."""
    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=modifier_rank)


def grow_vocabulary(model, num_tokens: int) -> None:
    """Give the model at least `num_tokens` embedding / LM-head rows, padded to VOCAB_MULTIPLE.

    New rows (the added tokens and the padding) start at the mean of the old rows: HF's
    `mean_resizing` draws them from N(mean, covariance), and that [hidden, hidden] covariance
    costs minutes at 7B for a negligible spread. The padding rows belong to no token: the
    constrained decoder can never emit them (tests/test_bigmodels.py).
    """
    embeddings = model.get_input_embeddings()
    with _gathered([embeddings.weight]):
        old = embeddings.weight.shape[0]
    if num_tokens <= old:
        return
    model.resize_token_embeddings(num_tokens, pad_to_multiple_of=VOCAB_MULTIPLE, mean_resizing=False)
    weights = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
               if m is not None}  # tied embeddings appear once
    with _gathered(weights.values(), modifier_rank=0), torch.no_grad():
        for weight in weights.values():  # [vocab, hidden]
            weight[old:] = weight[:old].mean(dim=0, dtype=torch.float32).to(weight.dtype)


def freeze_all_but_new_rows(model, first_new_row: int, stop_row: int | None = None) -> None:
    """Train only the embedding (and output) rows first_new_row..stop_row-1: the new SID tokens
    (the vocabulary padding after them keeps its initial value).

    Gradients of the old rows are zeroed by a hook, so Adam's update for them is exactly 0 (with
    weight_decay 0). Shapes: embedding weight [vocab, hidden]; the hook sees the same shape.
    """
    for p in model.parameters():
        p.requires_grad_(False)

    def keep_new_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:first_new_row] = 0
        if stop_row is not None:
            grad[stop_row:] = 0
        return grad

    weights = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    for weight in weights.values():  # tied embeddings appear once
        weight.requires_grad_(True)
        weight.register_hook(keep_new_rows)


def one_input_grads_hook(model) -> None:
    """Make re-enabling activation checkpointing replace the input-embedding requires-grad hook instead of adding one.

    transformers' `enable_input_require_grads` registers a new forward hook each time checkpointing is enabled and
    never removes the last; TRL switches checkpointing off and on around every rollout and every scoring pass (and the
    ranking evaluation around each of its calls), so a run gained ~2 hooks a step. One hook does the job."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the transformers model
    enable = base.enable_input_require_grads

    def replace_hooks():
        base.disable_input_require_grads()
        enable()

    base.enable_input_require_grads = replace_hooks


# Left padding without NaN gradients: no query row of an sdpa attention mask is ever fully masked.
#
# Every batch here is left-padded (SFT's answer-window collator, GRPO's prompts, beam search), so a
# pad position's query may attend to no key at all. transformers 5 hands such rows to
# `torch.nn.functional.scaled_dot_product_attention` as they are; on an H200 (torch 2.11, bf16) the
# memory-efficient kernel's backward then returned NaN gradients on some batches: a random-weight
# Qwen2.5-0.5B-shaped SFT run hit a non-finite gradient at step 50 with sdpa and none in 120 steps
# with eager attention (bench/gpu_check.py, 2026-11-26), and every later weight was NaN.
#
# The fix is the one transformers 4.x applied for the same kernel: a fully masked row attends to every
# key instead. Such rows are padding: their outputs never reach a real token (real queries still
# mask pad keys) or the loss, so real logits and gradients are unchanged (tests/test_attention.py).
# Importing this module registers the mask function under transformers' "sdpa" name, so every sdpa
# model of the process uses it, the reference model and evaluation included.


def padding_safe_sdpa_mask(*args, **kwargs) -> torch.Tensor | None:
    """transformers' sdpa_mask, then rows without any allowed key get all keys. Shape [B, 1, Q, KV], bool."""
    mask = sdpa_mask(*args, **kwargs)
    if mask is None:  # no padding: sdpa's own is_causal path
        return None
    return mask | ~mask.any(dim=-1, keepdim=True)


AttentionMaskInterface.register("sdpa", padding_safe_sdpa_mask)
