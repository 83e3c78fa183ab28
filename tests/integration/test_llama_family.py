"""Llama-family checkpoints (SmolLM2's) through the pipeline, beside the tiny Qwen2 every other test uses:
SFT (2 steps) -> evaluate on a tiny random Llama; tied embeddings stay tied through token adding, vocabulary
padding, LoRA merge and saving; a tokenizer without a pad token; no chat template ever reaches a prompt."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import evaluate
import sft
from conftest import CATEGORY, sft_args, split_path
from minionerec.data.formats import load_sid_index, sid_vocabulary
from minionerec.model.loading import VOCAB_MULTIPLE, add_sid_tokens, load_tokenizer
from minionerec.model.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=600, seed=0)


def tied(model) -> bool:
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@pytest.fixture(scope="module")
def llama_dir(demo_data, tmp_path_factory) -> Path:
    index, meta = (demo_data / "index" / f"{CATEGORY}.{kind}.json" for kind in ("index", "item"))
    return build_tiny_model(tmp_path_factory.mktemp("llama"), index, meta, architecture="llama", **SMALL)


def test_tiny_llama_is_a_llama_and_unknown_architectures_fail(llama_dir, demo_data, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and tied(model)
    index, meta = (demo_data / "index" / f"{CATEGORY}.{kind}.json" for kind in ("index", "item"))
    with pytest.raises(SystemExit, match="--architecture must be one of qwen2, llama"):
        build_tiny_model(tmp_path / "x", index, meta, architecture="gpt2", **SMALL)


@pytest.mark.parametrize("tie", [True, False])
def test_tied_stays_tied_through_adding_and_padding(demo_data, tmp_path, tie):
    """Tokens added to an odd-sized vocabulary: rows padded to VOCAB_MULTIPLE; tied stays tied (untied untied)
    through save and reload."""
    index, meta = (demo_data / "index" / f"{CATEGORY}.{kind}.json" for kind in ("index", "item"))
    base = build_tiny_model(tmp_path / "base", index, meta, architecture="llama", tie_word_embeddings=tie, **SMALL)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    assert add_sid_tokens(model, tokenizer, sid_vocabulary(load_sid_index(index))) == 0  # already one token each
    new = [f"<z_{i}>" for i in range(3)]
    assert add_sid_tokens(model, tokenizer, new) == 3
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % VOCAB_MULTIPLE == 0 and rows >= len(tokenizer) and model.get_output_embeddings().weight.shape[0] == rows
    assert tied(model) == tie
    assert all(len(tokenizer(t, add_special_tokens=False).input_ids) == 1 for t in new)
    model.save_pretrained(tmp_path / "saved")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert tied(again) == tie and again.config.tie_word_embeddings == tie


def test_tokenizer_without_pad_token_gets_eos(llama_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token and loaded.pad_token_id is not None


def test_sft_then_evaluate_on_a_tiny_llama(llama_dir, demo_data, tmp_path):
    """2 SFT steps (LoRA, merged at the end) -> evaluate: 0 invalid SIDs; the merged checkpoint is still tied."""
    trainer = sft.main(sft_args(demo_data, llama_dir, tmp_path / "sft", lora_r=4, lora_alpha=8,
                                gradient_checkpointing=True))
    assert trainer.state.global_step == 2
    final = tmp_path / "sft" / "final_checkpoint"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert type(model).__name__ == "LlamaForCausalLM" and tied(model) and model.config.tie_word_embeddings
    metrics = evaluate.main(evaluate.Args(
        base_model=str(final), test_file=str(split_path(demo_data, "test")),
        sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"),
        result_json=str(tmp_path / "pred.json"), num_beams=5, batch_size=4, sample=6))
    ours = metrics["constrained beam search"]
    assert ours["invalid"] == 0 and ours["duplicate"] == 0 and ours["users"] == 6


def test_no_chat_template_is_ever_applied():
    """Prompts are plain text (minionerec.data.prompts): a checkpoint's chat template must not wrap them."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part in {".venv", "tests", "build"} or part.startswith(".") for part in path.relative_to(ROOT).parts):
            continue
        if re.search(r"apply_chat_template|chat_template\s*=", path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"chat templates applied in: {offenders}"


def test_tokenizer_with_chat_template_tokenizes_prompts_unchanged(llama_dir, tmp_path):
    from minionerec.data.prompts import Prompts

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    prompt = Prompts("upstream").eval_prompt(["<a_1><b_2><c_3>"])
    plain = tokenizer(prompt).input_ids
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)(prompt).input_ids == plain
    assert torch.equal(torch.tensor(plain), torch.tensor(tokenizer(prompt).input_ids))


def test_sft_gradient_checkpointing_reaches_the_model(demo_data, llama_dir, tmp_path):
    args = sft_args(demo_data, llama_dir, tmp_path / "gc", gradient_checkpointing=True, max_steps=1)
    trainer = sft.main(args)
    assert trainer.args.activation_checkpointing and trainer.model.is_activation_checkpointing
    off = sft.training_arguments(sft_args(demo_data, llama_dir, tmp_path / "off"), 1, 1, None, evaluate=False)
    assert not off.activation_checkpointing


@pytest.mark.parametrize("reentrant", [True, False])
def test_generation_gives_back_the_trainers_checkpointing_kwargs(llama_dir, reentrant):
    """Rollouts and in-training evaluation unwrap the model for generate, which turns activation checkpointing
    off and on again. It must come back with the trainer's kwargs: TRL forces use_reentrant=True for LoRA under
    ZeRO-3, and transformers' default (False) would silently train that case incorrectly."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from minionerec.ranking.callback import generation_model

    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    kwargs = {"use_reentrant": reentrant}
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    trainer = SimpleNamespace(model_wrapped=model, accelerator=Accelerator(cpu=True),
                              args=SimpleNamespace(gradient_checkpointing_kwargs=kwargs))
    with generation_model(trainer) as unwrapped:
        assert not unwrapped.is_gradient_checkpointing  # generate runs without it
    layer = model.model.layers[0]
    assert model.is_gradient_checkpointing and layer._gradient_checkpointing_func.keywords == kwargs


@pytest.mark.parametrize("tie", [True, False])
def test_bf16_run_saves_a_bf16_checkpoint(demo_data, tmp_path, tie):
    """A DDP / one-device bf16 run trains fp32 master weights under autocast; its final_checkpoint is written in
    bf16 (the training dtype, as upstream's) with config.json saying so, tied stays tied, and the live weights
    stay fp32 (a best_checkpoint is saved mid-run)."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from minionerec.model.saving import save_final_checkpoint

    index, meta = (demo_data / "index" / f"{CATEGORY}.{kind}.json" for kind in ("index", "item"))
    base = build_tiny_model(tmp_path / "base", index, meta, architecture="llama", tie_word_embeddings=tie, **SMALL)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), AutoTokenizer.from_pretrained(base)
    trainer = SimpleNamespace(model=model, accelerator=Accelerator(cpu=True), is_deepspeed_enabled=False,
                              is_fsdp_enabled=False, args=SimpleNamespace(bf16=True, should_save=True))
    final = save_final_checkpoint(trainer, tokenizer, tmp_path / "out")
    again = AutoModelForCausalLM.from_pretrained(final)  # dtype "auto" (transformers 5): config.json's
    assert again.dtype == torch.bfloat16 and model.dtype == torch.float32
    assert tied(again) == tie
    for (name, saved), live in zip(again.state_dict().items(), model.state_dict().values()):
        assert torch.equal(saved, live.to(torch.bfloat16)), name
    size = sum(f.stat().st_size for f in final.glob("*.safetensors"))
    assert size < 0.6 * sum(p.numel() * 4 for p in model.parameters())  # half of fp32, plus the header
