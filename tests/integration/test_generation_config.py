"""Upstream issue #49: a checkpoint's own generation_config.json must not change constrained decoding."""
import json
import shutil
from contextlib import nullcontext

import pytest
from transformers import GenerationConfig

import evaluate
from minionerec.ranking import constrained
from minionerec.ranking.constrained import library_generation_defaults
from minionerec.model.loading import load_model


@pytest.fixture(scope="module")
def hostile_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny checkpoint plus a generation_config.json that samples, sharpens, truncates and renormalises,
    and forbids the SID token that starts the most items (so it would change any ranking it reached)."""
    out = tmp_path_factory.mktemp("hostile") / "model"
    shutil.copytree(tiny_model_dir, out)
    vocab = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    first_level = next(t["id"] for t in vocab if t["content"].startswith("<a_"))
    config = {"do_sample": True, "temperature": 0.3, "top_k": 5, "top_p": 0.5, "renormalize_logits": True,
              "suppress_tokens": [first_level], "repetition_penalty": 3.0}
    (out / "generation_config.json").write_text(json.dumps(config))
    return out


def run_eval(model_dir, demo_data, tmp_path, name):
    args = evaluate.Args(base_model=str(model_dir), test_file=str(demo_data / "test" / "Demo.csv"),
                         sid_index_path=str(demo_data / "index" / "Demo.index.json"),
                         result_json=str(tmp_path / f"{name}.json"), num_beams=10, batch_size=4, sample=12,
                         dtype="float32")
    metrics = evaluate.main(args)
    return [r["predict"] for r in json.loads((tmp_path / f"{name}.json").read_text())], metrics


def test_hostile_generation_config_gives_the_same_predictions(tiny_model_dir, hostile_model_dir, demo_data, tmp_path):
    assert load_model(hostile_model_dir).generation_config.top_k == 5  # the file is really read
    clean, clean_metrics = run_eval(tiny_model_dir, demo_data, tmp_path, "clean")
    hostile, hostile_metrics = run_eval(hostile_model_dir, demo_data, tmp_path, "hostile")
    assert hostile == clean and hostile_metrics == clean_metrics


def test_the_guard_is_what_protects(hostile_model_dir, tiny_model_dir, demo_data, tmp_path, monkeypatch):
    """Without library_generation_defaults the same file changes the predictions: the test above can fail."""
    clean, _ = run_eval(tiny_model_dir, demo_data, tmp_path, "clean")
    monkeypatch.setattr(constrained, "library_generation_defaults", nullcontext)
    assert run_eval(hostile_model_dir, demo_data, tmp_path, "unguarded")[0] != clean


def test_guard_restores_the_checkpoint_config(hostile_model_dir):
    model = load_model(hostile_model_dir)
    saved = model.generation_config
    with pytest.raises(RuntimeError):
        with library_generation_defaults(model):
            assert model.generation_config.to_diff_dict() == GenerationConfig().to_diff_dict()
            raise RuntimeError("decoding failed")
    assert model.generation_config is saved and saved.top_k == 5
