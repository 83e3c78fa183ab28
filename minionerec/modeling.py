"""Loading a causal LM + tokenizer from a local directory and giving it the SID vocabulary."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minionerec import attention  # noqa: F401  (registers the padding-safe sdpa mask; see its docstring)


def load_tokenizer(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # Qwen base checkpoints ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def best_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """bf16 where the accelerator supports it, fp32 otherwise (CPU bf16 matmuls are slow)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(path, dtype: torch.dtype | None = None, from_scratch: bool = False):
    """`from_scratch` keeps the architecture of `path` but starts from random weights."""
    dtype = dtype or best_dtype()
    if from_scratch:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


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
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return added


def freeze_all_but_new_rows(model, first_new_row: int) -> None:
    """Train only the embedding (and output) rows from `first_new_row` on: the new SID tokens.

    Gradients of the old rows are zeroed by a hook, so Adam's update for them is exactly 0 (with
    weight_decay 0). Shapes: embedding weight [vocab, hidden]; the hook sees the same shape.
    """
    for p in model.parameters():
        p.requires_grad_(False)

    def keep_new_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:first_new_row] = 0
        return grad

    weights = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    for weight in weights.values():  # tied embeddings appear once
        weight.requires_grad_(True)
        weight.register_hook(keep_new_rows)


def save_final_checkpoint(trainer, tokenizer, output_dir) -> Path:
    """Write output_dir/final_checkpoint (model + tokenizer). Every rank must call it: under
    DeepSpeed/DDP `save_model` gathers the weights and rank 0 writes them.

    Atomic: the writer saves into a sibling directory named after its process, then renames it onto
    final_checkpoint, so a kill never leaves a half-written one. The writer is the process that
    transformers lets write weights: `args.should_save` and global rank 0 (on CPU torchrun every
    process has should_save, but only rank 0 gets weights; the others' partial copies are dropped)."""
    import os
    import shutil
    import socket

    import torch.distributed as dist

    from minionerec.atomic import replace_dir

    final_dir = Path(output_dir, "final_checkpoint")
    tmp_dir = Path(output_dir, f".final_checkpoint.{socket.gethostname()}-{os.getpid()}.tmp")
    trainer.save_model(tmp_dir)
    if trainer.args.should_save and (not dist.is_initialized() or dist.get_rank() == 0):
        tokenizer.save_pretrained(tmp_dir)
        replace_dir(tmp_dir, final_dir)
    else:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir
