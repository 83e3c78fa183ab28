"""Every bad input docs/errors-and-resume.md lists: one `error: ...` line on stderr naming the flag / file /
row, exit code 2, no traceback, nothing written, and no model loaded.

Most cases go through `minionerec.run.cli.run` in-process (the exact code path of `python x.py ...`
minus the interpreter start-up, ~4 s each); `test_scripts_print_one_line_in_a_subprocess` runs
each script once for real.
"""
import gzip
import importlib.util
import json
import os
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

import convert_dataset
import evaluate
import rl
import sasrec
import sft
from conftest import CATEGORY, split_path
from minionerec.prep import amazon18_data_process
from minionerec.model import tiny
from minionerec.run import preflight
from minionerec.run import cli
from minionerec.rq import rqkmeans, text2emb
from minionerec.rq.common import save_embeddings


def cli_error(monkeypatch, capsys, module, **flags) -> str:
    """Run `module` through cli.run with `flags`; assert exit code 2 and exactly one stderr line."""
    argv = [f"--{k}={v}" for k, v in flags.items()]
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    loaded = []
    monkeypatch.setattr("minionerec.model.loading.AutoModelForCausalLM.from_pretrained",
                        lambda *a, **k: loaded.append(a) or pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, module.Args)
    assert exit_info.value.code == cli.SETUP_EXIT_CODE
    # stderr also carries warnings and tqdm bars (which end in "it/s]" and are cleared with blanks)
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and not line.startswith("warning: ") and not line.rstrip().endswith("/s]")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not loaded
    return err[0]


def index_path(data):
    return data / "index" / f"{CATEGORY}.index.json"


def meta_path(data):
    return data / "index" / f"{CATEGORY}.item.json"


def sft_flags(data, model, out, **overrides):
    return {"base_model": model, "train_file": split_path(data, "train"), "output_dir": out,
            "sid_index_path": index_path(data), "item_meta_path": meta_path(data), "max_steps": 1,
            **overrides}


def rl_flags(data, model, out, **overrides):
    return {"model_path": model, "train_file": split_path(data, "train"), "output_dir": out,
            "sid_index_path": index_path(data), "item_meta_path": meta_path(data), "max_steps": 1,
            "batch_size": 8, "micro_batch_size": 8, "num_generations": 4, **overrides}


def edited_csv(tmp_path, data, edit, name="bad.csv"):
    path = tmp_path / name
    path.write_text(edit(split_path(data, "train").read_text()))
    return path


def first_row_cell(text, old, new):
    header, first, rest = text.split("\n", 2)
    assert old in first
    return "\n".join([header, first.replace(old, new, 1), rest])


# --- sft.py: data files (each names the file and, for CSVs, the row)
@pytest.mark.parametrize("case, message", [
    ("unclosed_list", r"bad\.csv: row 2: column 'history_item_sid' is not a list literal"),
    ("unknown_sid", r"bad\.csv: row 2: SID <zz_\d+>.* is not in the SID index"),
    ("header_only", r"bad\.csv: no data rows"),
    ("missing_column", r"bad\.csv: missing column\(s\) item_sid"),
    ("directory", r"is a directory, not a file"),
    ("index_is_list", r"index\.json: expected a non-empty JSON object"),
    ("index_mixed_levels", r"index\.json: item \S+: SID has \d levels, others have \d"),
    ("item_not_in_meta", r"bad\.csv: row 2: item id NOPE is not in item\.json"),
])
def test_sft_bad_data_one_line(case, message, demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    flags = sft_flags(demo_data, tiny_model_dir, out)
    index = json.loads(index_path(demo_data).read_text())
    if case == "unclosed_list":
        # ['<a_8><b_2><c_11>'],<a_15>... -> ['<a_8><b_2><c_11>',<a_15>...: the history list is never closed
        flags["train_file"] = edited_csv(tmp_path, demo_data, lambda t: first_row_cell(t, "'],<", "',<"))
    elif case == "unknown_sid":
        flags["train_file"] = edited_csv(tmp_path, demo_data, lambda t: t.replace("<a_", "<zz_", 1))
    elif case == "header_only":
        flags["train_file"] = edited_csv(tmp_path, demo_data, lambda t: t.split("\n", 1)[0] + "\n")
    elif case == "missing_column":
        flags["train_file"] = edited_csv(tmp_path, demo_data, lambda t: t.replace(",item_sid", ",sid", 1))
    elif case == "directory":
        flags["train_file"] = tmp_path
    elif case == "index_is_list":
        flags["sid_index_path"] = tmp_path / "list.index.json"
        flags["sid_index_path"].write_text(json.dumps(list(index.values())))
    elif case == "index_mixed_levels":
        first = next(iter(index))
        index[first] = index[first][:2]
        flags["sid_index_path"] = tmp_path / "mixed.index.json"
        flags["sid_index_path"].write_text(json.dumps(index))
    elif case == "item_not_in_meta":
        df = pd.read_csv(split_path(demo_data, "train"), dtype=str)
        df.loc[0, "item_id"] = "NOPE"
        flags["train_file"] = tmp_path / "bad.csv"
        df.to_csv(flags["train_file"], index=False)
    line = cli_error(monkeypatch, capsys, sft, **flags)
    assert re.search(message, line), line
    assert not out.exists()


# --- sft.py: flags checked before the model loads
@pytest.mark.parametrize("overrides, message", [
    (dict(output_dir="FILE/sub"), r"--output_dir \S+/sub: \S+ is a file, not a directory"),
    (dict(resume_from_checkpoint="OUT/checkpoint-9"), r"--resume_from_checkpoint \S+checkpoint-9: no such directory"),
    (dict(sample=0), r"--sample must be -1 \(all rows\) or >= 1, got 0"),
    (dict(learning_rate="nan"), r"--learning_rate must be a finite number > 0, got nan"),
    (dict(num_epochs=0, max_steps=-1), r"--num_epochs 0 with --max_steps -1 trains nothing"),
    (dict(num_epochs=-1, max_steps=-1), r"--num_epochs -1 with --max_steps -1 trains nothing"),
    (dict(cutoff_len=5), r"--cutoff_len 5 cannot hold the longest answer \(\d+ tokens with EOS\) plus the prompt"),
    (dict(base_model="EMPTY"), r"--base_model \S+empty: no config\.json there"),
    (dict(deepspeed="BADYAML"), r"--deepspeed \S+ds\.yaml: invalid YAML \(.* at line \d+\)"),
    # issue 37: each of these wrote run_config.yaml first, or (LoRA) read the weights first
    (dict(warmup_steps=-1), r"--warmup_steps must be a step count >= 0 or a fraction of all steps in \(0, 1\), got -1"),
    (dict(lora_r=4, lora_target_modules="q_proj,qq_proj"), r"--lora_target_modules: \['qq_proj'\] not in the model"),
    (dict(eval_file="VALID", early_stopping_patience=2, eval_steps=3, save_steps=5),
     r"--early_stopping_patience needs --save_steps a multiple of --eval_steps .* got --save_steps 5\.0"),
    pytest.param(dict(report_to="tensorboard"), r"--report_to tensorboard: the tensorboard package is not installed",
                 marks=pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None,
                                          reason="tensorboard is installed")),
    # a named pipe or a device is refused by name, never read (a reader would block on it)
    (dict(train_file="FIFO"), r"fifo: not a regular file \(a FIFO, socket or device\)$"),
    (dict(config="FIFO"), r"recipe \S+fifo: not a regular file \(a FIFO, socket or device\)$"),
    (dict(config="BIGYAML"), r"recipe \S+big\.yaml: 1,200,000 bytes, too big for a recipe \(at most 1,000,000\)"),
])
def test_sft_bad_flags_one_line(overrides, message, demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "ds.yaml").write_text("zero_optimization:\n  stage: [2\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big.yaml").write_text("#" * 1_199_999 + "\n")  # a data file named as the recipe by mistake
    out = tmp_path / "out"
    subst = {"FILE": str(tmp_path / "file"), "OUT": str(out), "EMPTY": str(tmp_path / "empty"),
             "BADYAML": str(tmp_path / "ds.yaml"), "FIFO": str(tmp_path / "fifo"),
             "BIGYAML": str(tmp_path / "big.yaml"), "VALID": str(split_path(demo_data, "valid"))}
    overrides = {k: next((v.replace(a, b) for a, b in subst.items() if isinstance(v, str) and a in v), v)
                 for k, v in overrides.items()}
    line = cli_error(monkeypatch, capsys, sft, **sft_flags(demo_data, tiny_model_dir, out, **overrides))
    assert re.search(message, line), line
    assert not out.exists()


def test_sft_partial_checkpoint_named_explicitly(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"partial")
    line = cli_error(monkeypatch, capsys, sft, **sft_flags(demo_data, tiny_model_dir, out,
                                                          resume_from_checkpoint=out / "checkpoint-2"))
    assert line.endswith("checkpoint-2: no trainer_state.json (the save was interrupted)")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2"]  # nothing added


# --- rl.py
@pytest.mark.parametrize("overrides, message", [
    (dict(reward_type="sasrec"), r"--reward_type sasrec needs --sasrec_path \(an existing file\), got ''"),
    (dict(reward_type="semantic", item_embeddings_path="ADA"), r"ada\.npy: expected \[80, dim\] item embeddings, got \(7, 4\)"),
    (dict(num_generations=96, batch_size=96, micro_batch_size=96), r"--num_generations 96 exceeds the 80 distinct SIDs"),
    (dict(num_train_epochs=0), r"--num_train_epochs 0 with --max_steps -1 trains nothing"),
    (dict(learning_rate="nan"), r"--learning_rate must be a finite number > 0"),
    (dict(model_path="EMPTY"), r"--model_path \S+empty: no config\.json there"),
    (dict(warmup_steps=-1), r"--warmup_steps must be a step count >= 0 or a fraction of all steps in \(0, 1\), got -1"),
    (dict(lora_r=4, lora_target_modules="q_proj,qq_proj"), r"--lora_target_modules: \['qq_proj'\] not in the model"),
    (dict(reward_type="semantic", item_embeddings_path="NPZ"), r"ada\.npz: expected \[80, dim\] item embeddings, got an \.npz archive"),
    (dict(reward_type="rule+prefix", prefix_reward_weights="0.5,1.0"),
     r"--prefix_reward_weights needs 3 number\(s\), one per SID level of the index, got '0\.5,1\.0'"),
    (dict(reward_type="prefix", prefix_reward_weights="1,0.5,0.2"), r"--prefix_reward_weights must be non-decreasing"),
])
def test_rl_bad_flags_one_line(overrides, message, demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "ada.npy", np.zeros((7, 4), dtype=np.float32))
    np.savez(tmp_path / "ada.npz", embeddings=np.zeros((80, 4), dtype=np.float32))
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    if "max_steps" not in overrides and "num_train_epochs" in overrides:
        overrides["max_steps"] = -1
    subst = {"ADA": str(tmp_path / "ada.npy"), "NPZ": str(tmp_path / "ada.npz"), "EMPTY": str(tmp_path / "empty")}
    overrides = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
    line = cli_error(monkeypatch, capsys, rl, **rl_flags(demo_data, tiny_model_dir, out, **overrides))
    assert re.search(message, line), line
    assert not out.exists()  # no completions/ or checkpoint left behind


def test_rl_bad_csv_one_line(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    bad = edited_csv(tmp_path, demo_data, lambda t: t.replace("<b_", "<zz_", 1))
    line = cli_error(monkeypatch, capsys, rl, **rl_flags(demo_data, tiny_model_dir, tmp_path / "out", train_file=bad))
    assert "bad.csv: row 2: SID" in line and "is not in the SID index" in line


def test_lora_target_modules_as_a_comma_list_on_the_command_line(demo_data, tiny_model_dir, tmp_path, monkeypatch,
                                                                 capsys):
    """fire reads `--lora_target_modules q_proj,v_proj` as a tuple: the flag is the comma list again, and its names
    pass the check (it reached the check as "('q_proj', 'v_proj')" and was refused)."""
    flags = sft_flags(demo_data, tiny_model_dir, tmp_path / "out", lora_r=4, dry_run="true")
    argv = [f"--{k}={v}" for k, v in flags.items()] + ["--lora_target_modules", "q_proj,v_proj"]
    monkeypatch.setattr(sys, "argv", ["sft.py", *argv])
    cli.run(sft.main, sft.Args)
    assert re.search(r"lora_target_modules +'q_proj,v_proj' +command line", capsys.readouterr().out)


def test_prefix_reward_weights_as_a_comma_list_on_the_command_line(demo_data, tiny_model_dir, tmp_path, monkeypatch,
                                                                  capsys):
    """fire reads `--prefix_reward_weights 0,0.5,1` as a tuple of numbers: the flag is the comma list again."""
    flags = rl_flags(demo_data, tiny_model_dir, tmp_path / "out", reward_type="prefix+rule", dry_run="true")
    argv = [f"--{k}={v}" for k, v in flags.items()] + ["--prefix_reward_weights", "0,0.5,1"]
    monkeypatch.setattr(sys, "argv", ["rl.py", *argv])
    cli.run(rl.main, rl.Args)
    assert re.search(r"prefix_reward_weights +'0,0\.5,1' +command line", capsys.readouterr().out)


# --- evaluate.py
def test_evaluate_more_beams_than_catalogue(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval" / "p.json"
    line = cli_error(monkeypatch, capsys, evaluate, base_model=tiny_model_dir, test_file=split_path(demo_data, "test"),
                     sid_index_path=index_path(demo_data), result_json=out, num_beams=81)
    assert line.startswith("error: --num_beams 81 exceeds the 80 distinct SIDs of the catalogue")
    assert not out.parent.exists()


def test_evaluate_refuses_a_fifo(demo_data, tiny_model_dir, tmp_path, monkeypatch, capsys):
    os.mkfifo(tmp_path / "fifo")
    out = tmp_path / "eval" / "p.json"
    line = cli_error(monkeypatch, capsys, evaluate, base_model=tiny_model_dir, test_file=tmp_path / "fifo",
                     sid_index_path=index_path(demo_data), result_json=out)
    assert line == f"error: --test_file not a regular file (a FIFO, socket or device): {tmp_path / 'fifo'}"
    assert not out.parent.exists()


# --- data preparation and SID construction scripts
def test_convert_dataset_item_missing_from_item_json(demo_data, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(demo_data / "raw", raw)
    meta = json.loads((raw / f"{CATEGORY}.item.json").read_text())
    header, first, rest = (raw / f"{CATEGORY}.train.inter").read_text().split("\n", 2)
    del meta[first.split("\t")[2]]
    (raw / f"{CATEGORY}.item.json").write_text(json.dumps(meta))
    line = cli_error(monkeypatch, capsys, convert_dataset, inter_dir=raw, category=CATEGORY,
                     item_meta_path=raw / f"{CATEGORY}.item.json", sid_index_path=raw / f"{CATEGORY}.index.json",
                     output_dir=tmp_path / "out")
    assert "Demo.train.inter: line 2: item" in line and "is missing from item.json or index.json" in line
    assert not (tmp_path / "out").exists()


def test_amazon_truncated_gzip(tmp_path, monkeypatch, capsys):
    data = gzip.compress(b"".join(json.dumps({"reviewerID": f"U{i}", "asin": "A", "unixReviewTime": 1}).encode()
                                  + b"\n" for i in range(200)))
    (tmp_path / "reviews.json.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "meta.json").write_text("{}\n")
    line = cli_error(monkeypatch, capsys, amazon18_data_process, reviews_path=tmp_path / "reviews.json.gz",
                     meta_path=tmp_path / "meta.json", category="X", output_dir=tmp_path / "out")
    assert "reviews.json.gz: unreadable after line" in line and "Compressed file ended" in line
    assert not (tmp_path / "out").exists()


def test_rq_too_few_codes_for_the_items(demo_data, tmp_path, monkeypatch, capsys):
    ids = list(json.loads(index_path(demo_data).read_text()))
    emb = save_embeddings(ids, np.random.default_rng(0).normal(size=(len(ids), 8)), tmp_path / "e.npy")
    line = cli_error(monkeypatch, capsys, rqkmeans, embedding_path=emb, output_path=tmp_path / "x.index.json",
                     levels=2, codebook_size=8)
    assert line == ("error: --levels 2 x --codebook_size 8 give 64 distinct SIDs for 80 items; raise either, "
                    "or use --collision append")
    assert not (tmp_path / "x.index.json").exists()


def test_text2emb_empty_text(demo_data, tmp_path, monkeypatch, capsys):
    meta = json.loads(meta_path(demo_data).read_text())
    first = next(iter(meta))
    meta[first].update(title="", description="")
    (tmp_path / "item.json").write_text(json.dumps(meta))
    line = cli_error(monkeypatch, capsys, text2emb, item_meta_path=tmp_path / "item.json",
                     output_path=tmp_path / "e.npy", method="tfidf")
    assert line.endswith(f"item.json: item {first} has an empty title and description (1 item(s) in all)")
    assert not (tmp_path / "e.npy").exists()


def test_tiny_model_output_dir_is_a_file(demo_data, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("keep")
    line = cli_error(monkeypatch, capsys, tiny, output_dir=tmp_path / "file", sid_index_path=index_path(demo_data),
                     item_meta_path=meta_path(demo_data))
    assert line == f"error: --output_dir {tmp_path / 'file'}: exists and is not a directory"
    assert (tmp_path / "file").read_text() == "keep"


def test_sasrec_bad_csv(demo_data, tmp_path, monkeypatch, capsys):
    bad = edited_csv(tmp_path, demo_data, lambda t: t.split("\n", 1)[0] + "\n")
    line = cli_error(monkeypatch, capsys, sasrec, train_file=bad, eval_file=split_path(demo_data, "valid"),
                     test_file=split_path(demo_data, "test"), sid_index_path=index_path(demo_data),
                     output_dir=tmp_path / "out")
    assert line.endswith("bad.csv: no data rows")


def test_unwritable_output_dir_is_named(tmp_path, monkeypatch):
    """Tests run as root here, which may write anywhere: simulate the refusal a normal user gets."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("minionerec.run.preflight.tempfile.TemporaryFile", refuse)
    with pytest.raises(SystemExit, match=rf"error: --output_dir {tmp_path}/a/b: {tmp_path} is not writable "
                                         r"\(Permission denied\)"):
        preflight.writable_dir(str(tmp_path / "a" / "b"), "output_dir")
    assert list(tmp_path.iterdir()) == []
