"""rq/text2emb.py: TF-IDF fallback and sentence-transformers on the tiny local Qwen2 (never downloaded)."""
import json

import numpy as np
import pytest

from conftest import CATEGORY
from rq.text2emb import Args, item_text, main


def meta_path(demo_data):
    return demo_data / "index" / f"{CATEGORY}.item.json"


def test_item_text_flattens_list_literals_and_strips_html():
    meta = {"title": "Glue &amp; Tape", "description": "['<b>Strong</b> hold.', 'Two pack']"}
    assert item_text(meta) == "Glue & Tape. Strong hold. Two pack"


def test_tfidf_writes_npy_aligned_with_item_json_order(demo_data, tmp_path):
    out = tmp_path / "Demo.emb.npy"
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(out), method="tfidf", dim=16))
    ids = json.loads((tmp_path / "Demo.emb.ids.json").read_text())
    assert ids == list(json.loads(meta_path(demo_data).read_text()))  # item.json key order
    x = np.load(out)
    assert x.shape == (len(ids), 16) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "lasttoken"])
def test_sentence_transformers_on_local_model(demo_data, tiny_model_dir, tmp_path, pooling):
    out = tmp_path / f"{pooling}.npy"
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(out), model_path=str(tiny_model_dir),
              pooling=pooling, batch_size=16, max_length=32, device="cpu"))
    x = np.load(out)
    assert x.shape[0] == len(json.loads(meta_path(demo_data).read_text())) and x.shape[1] == 32  # hidden size
    assert np.isfinite(x).all() and len(np.unique(x.round(5), axis=0)) > 1


def test_missing_model_dir_is_one_line_error(demo_data, tmp_path):
    with pytest.raises(SystemExit, match="no config.json there"):
        main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "x.npy"),
                  model_path=str(tmp_path / "nowhere")))
    with pytest.raises(SystemExit, match="--pooling must be mean or lasttoken"):
        main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "x.npy"), method="tfidf",
                  pooling="max"))


def test_causal_lm_mean_pools_the_real_tokens(demo_data, tiny_model_dir, tmp_path):
    """--method causal_lm: the attention-masked mean of the last hidden states; padding does not change a row."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from rq.text2emb import causal_lm_embeddings

    out = tmp_path / "lm.npy"
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(out), method="causal_lm",
              model_path=str(tiny_model_dir), batch_size=16, max_length=32, device="cpu"))
    x = np.load(out)
    assert x.shape == (len(json.loads(meta_path(demo_data).read_text())), 32) and np.isfinite(x).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5) and len(np.unique(x.round(5), axis=0)) > 1
    texts = ["short", "a much longer item text with many more words in it"]
    alone = causal_lm_embeddings(texts[:1], str(tiny_model_dir), normalize=False, device="cpu")
    padded = causal_lm_embeddings(texts, str(tiny_model_dir), normalize=False, device="cpu")
    assert np.allclose(alone[0], padded[0], atol=1e-5)  # the pad positions are masked out of the mean
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(tiny_model_dir)(**tokenizer(texts[1:], return_tensors="pt")).last_hidden_state
    assert np.allclose(padded[1], hidden[0].mean(0).numpy(), atol=1e-5)
