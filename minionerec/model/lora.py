"""LoRA via peft for SFT and RL: low-rank adapters on the linear layers, plus the SID rows.

The SID tokens' rows of the input embedding and the LM head must train too (in SFT they are new
and start at the mean of the old rows). peft's `trainable_token_indices` trains exactly those rows
(a [n_sid, hidden] parameter per matrix, written over the frozen weight in forward); every other
weight stays frozen and bit-identical. With tied embeddings (Qwen2.5 <= 3B) one set of rows
serves both. The final checkpoint is merged (W + B A * alpha / r, SID rows written in) and loads
with AutoModelForCausalLM.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from transformers.integrations import is_deepspeed_zero3_enabled


def target_names(target_modules: str) -> str | list[str]:
    """--lora_target_modules as peft takes it: "all-linear" (every linear layer but the LM head) or the list of
    comma-separated module names (e.g. "q_proj,v_proj" -> ["q_proj", "v_proj"])."""
    names = target_modules.strip()
    if not names:
        raise SystemExit("error: --lora_target_modules is empty; use all-linear or names such as q_proj,v_proj")
    return names if names == "all-linear" else [n.strip() for n in names.split(",") if n.strip()]


def check_target_modules(target_modules: str, model_dir) -> None:
    """Before any weights are read: every named module is in the architecture of `model_dir`, built from its
    config.json on the meta device (no weights, no memory; seconds even at 7B)."""
    targets = target_names(target_modules)
    if targets == "all-linear":
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in present]
    if unknown:
        raise SystemExit(f"error: --lora_target_modules: {unknown} not in the model (e.g. q_proj, k_proj, v_proj, "
                         f"o_proj, gate_proj, up_proj, down_proj)")


def check_lora(args, model_dir) -> None:
    """The LoRA flags (minionerec.run.args.LoraArgs) of sft.py / rl.py, before any weights are read: --lora_r >= 0
    (0 = off) and, with LoRA on, --lora_target_modules present in `model_dir`'s architecture."""
    if args.lora_r < 0:
        raise SystemExit(f"error: --lora_r must be >= 0 (0 = off), got {args.lora_r}")
    if args.lora_r:
        check_target_modules(args.lora_target_modules, model_dir)


def lora_config(args, sid_ids: list[int], model):
    """A peft LoraConfig from the LoRA flags (minionerec.run.args.LoraArgs), or None when --lora_r is 0 (LoRA off).
    The names were checked before the weights loaded (check_lora).

    sid_ids: rows of the SID tokens in the embedding / LM head.
    """
    if args.lora_r <= 0:
        return None
    from peft import LoraConfig

    targets = target_names(args.lora_target_modules)
    tied = model.get_output_embeddings() is None or (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight)
    embed_name = _module_name(model, model.get_input_embeddings())
    rows = {embed_name: list(sid_ids)}
    if not tied:
        rows[_module_name(model, model.get_output_embeddings())] = list(sid_ids)
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
                      trainable_token_indices=rows, task_type="CAUSAL_LM")


def checkpointing_kwargs(lora: bool, zero_stage: int) -> dict:
    """Activation checkpointing's kwargs: non-reentrant, except LoRA under ZeRO-3, where reentrant checkpointing is
    what trains correctly (TRL's GRPOTrainer forces it there, trl#2514; sft.py does the same)."""
    return {"use_reentrant": lora and zero_stage == 3}


def _module_name(model, module) -> str:
    """Last component of the module's name (peft matches by suffix): embed_tokens, lm_head."""
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def apply_lora(model, config):
    """Wrap `model` in a PeftModel (SFT; RL passes the config to TRL, which wraps it itself)."""
    from peft import get_peft_model

    return get_peft_model(model, config)


def is_lora_model(model) -> bool:
    from accelerate.utils import is_peft_model

    return is_peft_model(model)


def save_merged(trainer, final_dir: Path) -> None:
    """Merge the adapters and SID rows into the base weights and write a plain checkpoint.

    Every rank must call it. Under ZeRO-3 the full weights are gathered on every rank first (the
    merged model must fit one device); rank 0 merges and writes. The trainer's model is merged in
    place: call this once, after training.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    gather = contextlib.nullcontext()
    if is_deepspeed_zero3_enabled():
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    with gather:
        if trainer.is_world_process_zero():
            merged = model.merge_and_unload()
            merged.save_pretrained(final_dir)
