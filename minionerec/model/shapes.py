"""Real base-model shapes the recipes are sized for, by name, as their config.json files state them.

A recipe names its model with the meta key `base_model_shape: Qwen2.5-7B`; the rehearsal (minionerec.launch.rehearsal)
takes the family and embedding tying from it for its tiny stand-in when BASE_MODEL is not on this machine, and the
memory arithmetic (minionerec.model.memory) its sizes. A checkpoint directory's own config.json always wins.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    name: str
    family: str  # qwen2 | llama (minionerec.model.tiny's architectures)
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of one decoder layer's linear layers: q, k, v, o, gate, up, down."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def parameters(self) -> int:
        """Every weight (biases and norms are < 0.1% and left out): layers + embedding (+ an untied LM head)."""
        layers = self.num_layers * sum(a * b for a, b in self.linear_shapes())
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return layers + embeddings


def _qwen2(name, hidden, inter, layers, heads, kv, vocab, tied) -> Shape:
    return Shape(name, "qwen2", hidden, inter, layers, heads, kv, vocab, tied)


# From each model's config.json (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, vocab_size, tie_word_embeddings).
SHAPES = {s.name: s for s in (
    _qwen2("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, True),
    _qwen2("Qwen2.5-1.5B", 1536, 8960, 28, 12, 2, 151936, True),
    _qwen2("Qwen2.5-3B", 2048, 11008, 36, 16, 2, 151936, True),
    _qwen2("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, False),
    _qwen2("Qwen2.5-14B", 5120, 13824, 48, 40, 8, 152064, False),
    _qwen2("Qwen2.5-32B", 5120, 27648, 64, 40, 8, 152064, False),
    _qwen2("Qwen2.5-72B", 8192, 29568, 80, 64, 8, 152064, False),
    Shape("SmolLM2-135M", "llama", 576, 1536, 30, 9, 3, 49152, True),
)}
DEFAULT = "Qwen2.5-1.5B"  # the paper's model, sft.sh's default BASE_MODEL


def shape_of_config(path: str | Path, name: str = "") -> Shape:
    """The Shape a config.json describes (model_type qwen2 or llama)."""
    config = json.loads(Path(path).read_text())
    family = config.get("model_type", "qwen2")
    if family not in ("qwen2", "llama"):
        raise ValueError(f"{path}: model_type {family!r}; the rehearsal builds qwen2 or llama stand-ins")
    return Shape(name or Path(path).parent.name, family, config["hidden_size"], config["intermediate_size"],
                 config["num_hidden_layers"], config["num_attention_heads"],
                 config.get("num_key_value_heads", config["num_attention_heads"]), config["vocab_size"],
                 bool(config.get("tie_word_embeddings", True)))


def named_shape(name: str) -> Shape:
    if name not in SHAPES:
        raise ValueError(f"unknown base_model_shape {name!r}; known: {', '.join(SHAPES)}")
    return SHAPES[name]
