"""Issue 22, item 5: command-line cases that gave a traceback, or ran silently on nonsense, or wrote an output over an
input. Each is now one `error:` line, exit code 2, before any weights load and before anything is written."""
from __future__ import annotations

import json
import shutil
import re

import pandas as pd
import pytest
import torch

import compare
import evaluate
import rl
import sasrec
import sft
from conftest import CATEGORY, split_path
from minionerec.data.formats import DataError, load_split
from minionerec.data.inter import read_inter, write_inter
from minionerec.run.recipe import ConfigError, resolve_args
from minionerec.run.flags import FlagError
from minionerec.run.resume import CheckpointError, check_resume_within
from test_preflight import cli_error, index_path, rl_flags, sft_flags


@pytest.mark.parametrize("overrides, message", [
    (dict(micro_batch_size=0), r"--micro_batch_size must be >= 1, got 0"),
    (dict(eval_steps=0), r"--eval_steps must be a step count >= 1 or a fraction of all steps in \(0, 1\), got 0"),
    (dict(save_steps=2.5), r"--save_steps must be a step count >= 1 or a fraction of all steps in \(0, 1\), got 2.5"),
    (dict(rank_eval_beams=0), r"--rank_eval_beams must be >= 1, got 0"),
    (dict(rank_eval_every=0), r"--rank_eval_every must be a finite number > 0, got 0"),
    (dict(report_to="wandbx"), r"--report_to must be one of none, wandb, tensorboard, got 'wandbx'"),
    (dict(packing=True, group_by_length=True),
     r"^error: --group_by_length only saves padding, which --packing has none of; set one of them$"),
    (dict(attn_implementation="flash"), r"--attn_implementation must be one of sdpa, flex_attention, eager, got 'flash'"),
    pytest.param(dict(packing=True, attn_implementation="flex_attention"),
                 r"^error: --attn_implementation flex_attention trains on CUDA only \(torch has no CPU backward for "
                 r"it\); use sdpa here$",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="flex attention trains on CUDA")),
    (dict(output_dir="MODEL/out"), r"--output_dir \S+/out lies inside the model directory --base_model"),
    (dict(base_model="NOWEIGHTS"), r"--base_model \S+noweights: no weights there"),
])
def test_sft_nonsense_flags(overrides, message, demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):  # all a model dir has, less its weights
        (no_weights / name).write_bytes((tiny_model_dir / name).read_bytes())
    subst = {"MODEL": str(tiny_model_dir), "NOWEIGHTS": str(no_weights)}
    overrides = {k: next((v.replace(a, b) for a, b in subst.items() if isinstance(v, str) and a in v), v)
                 for k, v in overrides.items()}
    out = overrides.get("output_dir", tmp_path / "out")
    line = cli_error(monkeypatch, capsys, sft, **sft_flags(demo_data, tiny_model_dir, out, **overrides))
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists() and not (tiny_model_dir / "out").exists()  # no run_config.yaml either


@pytest.mark.parametrize("overrides, message", [
    (dict(micro_batch_size=0), r"--micro_batch_size must be >= 1, got 0"),
    (dict(beam_search=False, temperature=0), r"--temperature must be a finite number > 0, got 0"),
    (dict(scale_rewards="bogus"), r"--scale_rewards must be one of group, batch, none, got 'bogus'"),
    (dict(report_to="wandbx"), r"--report_to must be one of none, wandb, tensorboard, got 'wandbx'"),
    (dict(rank_eval_beams=0), r"--rank_eval_beams must be >= 1, got 0"),
    (dict(rank_eval_every=0), r"--rank_eval_every must be a finite number > 0, got 0"),
    (dict(save_steps=0), r"--save_steps must be a step count >= 1 or a fraction of all steps in \(0, 1\), got 0"),
    (dict(beta=-1), r"--beta must be >= 0, got -1"),
])
def test_rl_nonsense_flags(overrides, message, demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    line = cli_error(monkeypatch, capsys, rl, **rl_flags(demo_data, tiny_model_dir, out, **overrides))
    assert re.search(message, line), line
    assert not out.exists()


def test_evaluate_refuses_to_write_over_its_model_or_inputs(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    config = (tiny_model_dir / "config.json").read_bytes()
    base = dict(base_model=tiny_model_dir, test_file=split_path(demo_data, "test"), sid_index_path=index_path(demo_data))
    line = cli_error(monkeypatch, capsys, evaluate, **base, result_json=tiny_model_dir / "config.json")
    assert "lies inside the model directory --base_model" in line
    assert (tiny_model_dir / "config.json").read_bytes() == config
    line = cli_error(monkeypatch, capsys, evaluate, **base, result_json=split_path(demo_data, "test"))
    assert line.endswith("is the input --test_file: choose another path")


def test_evaluate_checks_max_new_tokens_and_the_train_file_before_decoding(demo_data, tiny_model_dir, tmp_path,
                                                                           monkeypatch, capsys):
    base = dict(base_model=tiny_model_dir, test_file=split_path(demo_data, "test"), sid_index_path=index_path(demo_data),
                result_json=tmp_path / "p.json")
    line = cli_error(monkeypatch, capsys, evaluate, **base, max_new_tokens=1)
    assert re.search(r"--max_new_tokens 1 is shorter than an answer \(\d+ tokens\)", line)
    header_only = tmp_path / "train.csv"
    header_only.write_text(split_path(demo_data, "train").read_text().splitlines()[0] + "\n")
    line = cli_error(monkeypatch, capsys, evaluate, **base, train_file=header_only)  # the model never loads
    assert line.endswith("train.csv: no data rows")


def test_compare_refuses_to_overwrite_an_input(tmp_path, monkeypatch, capsys):
    rows = [{"item_sid": "<a_1><b_1>", "history_item_sid": [], "predict": ["<a_1><b_1>"]}]
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(rows))
    line = cli_error(monkeypatch, capsys, compare, a=tmp_path / "a.json", b=tmp_path / "b.json",
                     output_json=tmp_path / "a.json")
    assert line.endswith("a.json is the input --a: choose another path")
    assert json.loads((tmp_path / "a.json").read_text()) == rows


def test_sasrec_device_is_checked(demo_data, tmp_path, monkeypatch, capsys):
    line = cli_error(monkeypatch, capsys, sasrec, train_file=split_path(demo_data, "train"),
                     eval_file=split_path(demo_data, "valid"), test_file=split_path(demo_data, "test"),
                     sid_index_path=index_path(demo_data), output_dir=tmp_path / "out", device="bogus")
    assert line == "error: --device must be auto, cpu, cuda or cuda:N, got 'bogus'"


@pytest.mark.parametrize("text, message", [
    ("sft:\n  batch_size:\n", r"r\.yaml: batch_size: expected int, got an empty value"),
    ("sft:\n  category: [A, B]\n", r"r\.yaml: category: expected one str, got a list \['A', 'B'\]"),
    ("sft:\n  batch_size: 8\n  batch_size: 16\n", r"key 'batch_size' given twice at line 3"),
])
def test_recipe_values_that_were_traceback_or_silent(tmp_path, text, message):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises((ConfigError, FlagError), match=message):
        resolve_args(sft.Args, {"recipe": str(tmp_path / "r.yaml")})


@pytest.mark.parametrize("cell, message", [
    ("[['1'], '2']", r"column 'history_item_id' holds \['1'\]; expected plain strings"),
    ("[None]", r"column 'history_item_id' holds None"),
])
def test_nested_or_empty_history_cells_are_refused(demo_data, tmp_path, cell, message):
    df = pd.read_csv(split_path(demo_data, "train"), dtype=str, keep_default_na=False).head(3)
    df.loc[0, "history_item_id"] = cell
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=message):
        load_split(tmp_path / "bad.csv")


def test_resume_true_without_a_checkpoint_starts_fresh_and_past_max_steps_is_refused(capsys, tmp_path):
    from minionerec.run.resume import resolve_resume

    assert resolve_resume("true", tmp_path / "out") is None
    assert "starting fresh" in capsys.readouterr().err
    check_resume_within(4, 10)
    check_resume_within(12, -1)  # epochs decide
    with pytest.raises(CheckpointError, match=r"at step 10, at or past --max_steps 10"):
        check_resume_within(10, 10)


def test_repeated_interactions_are_refused_unless_allowed(tmp_path, capsys):
    """A file whose every line appears twice would convert to twice the train rows: one line, nothing written;
    --allow_repeated_rows true keeps every copy, with a warning."""
    rows = [("u1", ["1"], "2"), ("u2", ["3"], "1")] * 2
    path = tmp_path / f"{CATEGORY}.train.inter"
    write_inter(rows, path)
    with pytest.raises(DataError, match=r"train.inter: 2 of 4 rows repeat an earlier row exactly \(same user, "
                                        r"history and target; line 4 repeats line 2\): a file copied twice\?"):
        read_inter(path)
    assert read_inter(path, allow_repeated_rows=True) == rows
    assert "2 interaction row(s) repeat an earlier row exactly" in capsys.readouterr().err


def test_resume_refuses_the_other_scripts_checkpoint_and_another_model_shape(tiny_model_dir, tmp_path):
    from minionerec.run.resume import check_resume_matches

    def checkpoint(name, log, **shape):
        path = tmp_path / name
        path.mkdir()
        (path / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": log}))
        config = json.loads((tiny_model_dir / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, **shape}))
        return path

    sft_ckpt = checkpoint("sft", [{"loss": 2.0, "step": 1}])
    rl_ckpt = checkpoint("rl", [{"loss": 0.1, "reward": 0.5, "step": 1}])
    check_resume_matches(sft_ckpt, tiny_model_dir, "base_model", "sft")
    check_resume_matches(rl_ckpt, tiny_model_dir, "model_path", "rl")
    with pytest.raises(CheckpointError, match=r"an SFT checkpoint; rl\.py resumes only its own .*--model_path"):
        check_resume_matches(sft_ckpt, tiny_model_dir, "model_path", "rl")
    with pytest.raises(CheckpointError, match=r"an RL checkpoint; sft\.py resumes only its own"):
        check_resume_matches(rl_ckpt, tiny_model_dir, "base_model", "sft")
    wide = checkpoint("wide", [{"loss": 2.0, "step": 1}], hidden_size=64)
    with pytest.raises(CheckpointError, match=r"a model of another shape than --base_model \(hidden_size 64 vs 32\)"):
        check_resume_matches(wide, tiny_model_dir, "base_model", "sft")


def test_a_failed_final_save_leaves_no_temporary_directory(tmp_path):
    from types import SimpleNamespace

    from minionerec.model.saving import save_final_checkpoint

    def disk_full(path):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    trainer = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), model=torch.nn.Linear(2, 2),
                              save_model=disk_full, args=SimpleNamespace(should_save=True, bf16=False))
    with pytest.raises(OSError, match="No space left"):
        save_final_checkpoint(trainer, tokenizer=None, output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_convert_dataset_of_a_doubled_file_is_one_line_and_writes_nothing(monkeypatch, capsys, demo_data, tmp_path):
    import convert_dataset

    raw = tmp_path / "raw"
    shutil.copytree(demo_data / "raw", raw)
    train = raw / f"{CATEGORY}.train.inter"
    write_inter(read_inter(train) * 2, train)  # every interaction line twice
    flags = dict(inter_dir=raw, category=CATEGORY, item_meta_path=raw / f"{CATEGORY}.item.json",
                 sid_index_path=raw / f"{CATEGORY}.index.json", output_dir=tmp_path / "out")
    error = cli_error(monkeypatch, capsys, convert_dataset, **flags)
    assert re.match(r"error: .*train.inter: [\d,]+ of [\d,]+ rows repeat an earlier row exactly .* give "
                    r"--allow_repeated_rows true to train on every copy$", error), error
    assert not (tmp_path / "out").exists()
