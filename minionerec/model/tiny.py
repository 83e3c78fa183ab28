"""Build a tiny Qwen2 (or Llama) checkpoint offline: a tokenizer trained on the catalogue + a random LM.

`python -m minionerec.model.tiny --output_dir DIR --sid_index_path X --item_meta_path Y` writes a
directory that `--base_model DIR` loads exactly like a real local Qwen checkpoint. Tests and the
demo use it because no model hub is reachable here. `--architecture llama` builds the same shape as a
LlamaForCausalLM (the family of SmolLM2, minionerec.model.pretrained), so both families stay tested.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)

from minionerec.data import prompts
from minionerec.run import preflight
from minionerec.run.cli import run
from minionerec.data.formats import load_item_meta, load_sid_index, sid_vocabulary

EOS = "<|endoftext|>"
ARCHITECTURES = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}


@dataclass
class Args:
    """Build a tiny Qwen2 (or Llama) base model + tokenizer for a catalogue."""

    output_dir: str = ""  # where to save_pretrained the model and tokenizer
    sid_index_path: str = ""  # index.json: item id -> SID tokens (each becomes one token)
    item_meta_path: str = ""  # item.json: titles/descriptions the tokenizer is trained on
    hidden_size: int = 64  # model width (embedding and residual stream); divisible by --num_heads
    num_layers: int = 2  # decoder layers
    num_heads: int = 4  # attention (query) heads per layer
    num_kv_heads: int = 2  # key/value heads (grouped-query attention); divides --num_heads
    intermediate_size: int = 256  # MLP inner width
    vocab_size: int = 4000  # BPE vocabulary before the SID tokens are added
    max_position_embeddings: int = 2048  # longest sequence in tokens (a config limit; RoPE, no learned table)
    seed: int = 0  # torch seed for the random weight init
    model_vocab_size: int = 0  # > len(tokenizer): pad the embedding to this many rows (Qwen2.5: 151,936)
    tie_word_embeddings: bool = True  # one matrix for the input embedding and the LM head (as Qwen2.5-0.5B/1.5B)
    initializer_range: float = 0.02  # std of every weight matrix at init (transformers' default)
    embedding_std: float = 0.0  # > 0: the input embedding's init std instead (untied only)
    attention_dropout: float = 0.0  # dropout on the attention probabilities while training (the config's only dropout)
    architecture: str = "qwen2"  # qwen2 (Qwen2ForCausalLM) | llama (LlamaForCausalLM, as SmolLM2); same shape flags


def _training_texts(item_meta: dict) -> list[str]:
    """Item texts plus every prompt template of both styles, so prompts tokenise into few tokens."""
    texts = [f"{m['title']} {m.get('description', '')}" for m in item_meta.values()]
    texts += [t for style in prompts.STYLES for t in prompts.Prompts(style).templates()] * 50
    return texts


def build_tokenizer(item_meta: dict, sid_tokens: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as Qwen uses), then one normal added token per SID code."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_texts(item_meta), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS)
    tokenizer.add_tokens(sid_tokens)  # normal tokens: TRL's decode must not strip them
    return tokenizer


def build_tiny_model(output_dir, sid_index_path, item_meta_path, hidden_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, intermediate_size=256, vocab_size=4000, max_position_embeddings=2048,
                     seed=0, model_vocab_size=0, tie_word_embeddings=True, initializer_range=0.02,
                     embedding_std=0.0, attention_dropout=0.0, architecture="qwen2") -> Path:
    if architecture not in ARCHITECTURES:
        raise SystemExit(f"error: --architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    config_cls, model_cls = ARCHITECTURES[architecture]
    if embedding_std < 0 or (embedding_std and tie_word_embeddings) or initializer_range <= 0:
        raise SystemExit(f"error: --embedding_std must be >= 0 and needs --tie_word_embeddings false (it would scale "
                         f"the tied LM head too), --initializer_range > 0; got {embedding_std}, {initializer_range}")
    if not 0 <= attention_dropout < 1:
        raise SystemExit(f"error: --attention_dropout must be in [0, 1), got {attention_dropout}")
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(load_item_meta(item_meta_path), sid_vocabulary(load_sid_index(sid_index_path)),
                                vocab_size)
    config = config_cls(
        vocab_size=max(len(tokenizer), model_vocab_size), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range, attention_dropout=attention_dropout,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = model_cls(config)
    if embedding_std > 0:
        torch.nn.init.normal_(model.get_input_embeddings().weight, std=embedding_std)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def main(args: Args) -> None:
    for flag in ("output_dir", "sid_index_path", "item_meta_path"):
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    preflight.writable_dir(args.output_dir, "output_dir")  # before the tokenizer is trained
    out = build_tiny_model(**vars(args))
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(out).parameters())
    name = "Qwen2" if args.architecture == "qwen2" else "Llama"
    print(f"tiny {name} model ({n_params / 1e6:.2f}M parameters) written to {out}")


if __name__ == "__main__":
    run(main, Args)
