"""The tiny base model behaves like a real local checkpoint and knows every SID as one token."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CATEGORY
from minionerec.data.formats import load_sid_index, sid_vocabulary
from minionerec.model.loading import add_sid_tokens, missing_sid_tokens


def test_sid_tokens_are_single_normal_tokens_after_reload(tiny_model_dir, demo_data):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sid_tokens = sid_vocabulary(load_sid_index(demo_data / "index" / f"{CATEGORY}.index.json"))
    assert missing_sid_tokens(tokenizer, sid_tokens) == []
    for token in sid_tokens:
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1
    sid = "".join(sid_tokens[:3])
    ids = tokenizer(sid + "\n", add_special_tokens=False).input_ids
    assert len(ids) == 4
    assert tokenizer.decode(ids, skip_special_tokens=True) == sid + "\n"  # normal tokens survive decoding
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token is not None


def test_model_loads_and_matches_vocab(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    out = model(torch.tensor([tokenizer("hello").input_ids]))
    assert out.logits.shape[-1] == len(tokenizer)


def test_add_sid_tokens_grows_embeddings(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = len(tokenizer)
    assert add_sid_tokens(model, tokenizer, ["<z_1>", "<z_2>", "<a_0>"]) == 2
    rows = model.get_input_embeddings().weight.shape[0]
    assert len(tokenizer) == before + 2 and rows == -(-len(tokenizer) // 64) * 64  # padded to a multiple of 64
    assert add_sid_tokens(model, tokenizer, ["<z_1>"]) == 0


SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=600)


def demo_catalogue(demo_data):
    """The demo fixture's SID index and item file, which build_tiny_model reads."""
    return demo_data / "index" / "Demo.index.json", demo_data / "index" / "Demo.item.json"


def test_init_options(demo_data, tmp_path):
    """Untied with a unit-std input embedding, the other matrices at initializer_range; and the bad combinations."""
    from minionerec.model.tiny import build_tiny_model

    index, meta = demo_catalogue(demo_data)
    out = build_tiny_model(tmp_path / "m", index, meta, **SMALL, tie_word_embeddings=False, initializer_range=0.05,
                           embedding_std=1.0)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not model.config.tie_word_embeddings
    assert abs(model.get_input_embeddings().weight.std().item() - 1.0) < 0.05
    assert abs(model.get_output_embeddings().weight.std().item() - 0.05) < 0.005
    assert abs(model.model.layers[0].mlp.up_proj.weight.std().item() - 0.05) < 0.005
    for bad in (dict(embedding_std=1.0), dict(tie_word_embeddings=False, embedding_std=-1.0), dict(initializer_range=0)):
        with pytest.raises(SystemExit, match="--embedding_std must be >= 0"):
            build_tiny_model(tmp_path / "bad", index, meta, **SMALL, **bad)
    assert not (tmp_path / "bad").exists()  # nothing written


def test_attention_dropout_acts_in_training_only(demo_data, tmp_path):
    from minionerec.model.tiny import build_tiny_model

    index, meta = demo_catalogue(demo_data)
    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "m", index, meta, **SMALL,
                                                                  attention_dropout=0.5))
    assert model.config.attention_dropout == 0.5
    ids = torch.arange(1, 20).unsqueeze(0)  # [1, 19]
    model.train()
    torch.manual_seed(0)
    first = model(ids).logits
    assert not torch.equal(first, model(ids).logits)  # a fresh dropout mask per forward
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    with pytest.raises(SystemExit, match="--attention_dropout must be in"):
        build_tiny_model(tmp_path / "bad", index, meta, **SMALL, attention_dropout=1.0)
    assert not (tmp_path / "bad").exists()
