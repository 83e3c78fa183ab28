"""SASRec baseline: the model learns, scores every catalogue item, and the CLI's checkpoint is the RL reward's.

Knobs are shrunk (hidden 16-32, 1 block) so the whole file runs in seconds on a shared CPU.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sasrec as sasrec_cli
from minionerec.rl import rewards
from minionerec.data.formats import load_sid_index, load_split
from minionerec.ranking.sasrec import SASRec, load_sasrec, pad_histories
from conftest import CATEGORY, ROOT, split_path


def _index_path(data_dir: Path) -> Path:
    return data_dir / "index" / f"{CATEGORY}.index.json"


def _args(data_dir: Path, output_dir: Path, **overrides) -> sasrec_cli.Args:
    base = dict(train_file=str(split_path(data_dir, "train")), eval_file=str(split_path(data_dir, "valid")),
                test_file=str(split_path(data_dir, "test")), sid_index_path=str(_index_path(data_dir)),
                output_dir=str(output_dir), hidden_size=32, num_blocks=1, num_heads=2, dropout=0.0, batch_size=64,
                epochs=1, device="cpu", seed=0)
    return sasrec_cli.Args(**{**base, **overrides})


@pytest.fixture(scope="module")
def train_tensors(demo_data):
    items = list(load_sid_index(_index_path(demo_data)))
    rows = {item_id: r for r, item_id in enumerate(items)}
    return items, sasrec_cli.encode_split(str(split_path(demo_data, "train")), rows, max_len=10)


def test_loss_falls_and_parameters_change(train_tensors):
    items, (history, lengths, targets) = train_tensors
    torch.manual_seed(0)
    model = SASRec(len(items), hidden_size=32, max_len=10, num_blocks=1, num_heads=2, dropout=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):  # full-batch steps on the ~500 demo train rows
        loss = model.loss(history, lengths, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # starts near the uniform guess log(n_items), then must drop clearly below it
    assert losses[0] == pytest.approx(math.log(len(items)), rel=0.15)
    assert losses[-1] < 0.7 * losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_forward_eval_scores_every_catalogue_item(train_tensors):
    items, (history, lengths, _) = train_tensors
    model = SASRec(len(items), hidden_size=16, max_len=10, num_blocks=1, num_heads=1)
    model.train()
    scores = model.forward_eval(history[:7], lengths[:7])
    assert scores.shape == (7, len(items))  # [B, n_items]
    assert torch.isfinite(scores).all()
    assert model.training  # forward_eval restores the caller's mode
    assert torch.equal(scores, model.forward_eval(history[:7], lengths[:7]))  # dropout off: deterministic


def test_cli_run_writes_metrics_and_a_checkpoint_the_rl_reward_loads(demo_data, tmp_path):
    result = sasrec_cli.main(_args(demo_data, tmp_path))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best_epoch"] == 1 and saved["epochs_run"] == 1 and len(saved["valid_curve"]) == 1
    assert saved["test"] == result["test"]
    for key in ("HR@1", "HR@10", "NDCG@10", "NDCG@20", "HR@50"):
        assert 0.0 <= saved["test"][key] <= 1.0
    assert saved["test"]["invalid"] == 0 and saved["test"]["duplicate"] == 0
    assert saved["test"]["users"] == len(load_split(split_path(demo_data, "test")))

    # the RL `sasrec` reward loads the checkpoint through sasrec_path and scores real completions
    sid_index = load_sid_index(_index_path(demo_data))
    (reward,) = rewards.build_reward_funcs("sasrec", 2, sid_index, sasrec_path=saved["cf_path"])
    test_df = load_split(split_path(demo_data, "test")).iloc[:6]
    got = reward(completions=[s + "\n" for s in test_df["item_sid"]], target=list(test_df["item_sid"]),
                 history_item_id=list(test_df["history_item_id"]))
    assert len(got) == 6 and all(math.isfinite(g) for g in got) and any(g != 0.0 for g in got)
    # each reward is the model's own score of the target's catalogue row after the history's rows
    item_to_row, sid_to_row = rewards.item_rows(sid_index)
    padded, lengths = pad_histories([[item_to_row[i] for i in h] for h in test_df["history_item_id"]],
                                    len(sid_index), max_len=10)
    scores = load_sasrec(saved["cf_path"]).forward_eval(padded, lengths)  # [6, n_items]
    expected = [scores[k, sid_to_row[s]].item() for k, s in enumerate(test_df["item_sid"])]
    assert got == pytest.approx(expected, abs=1e-5)


def test_early_stopping_ends_after_patience_epochs_without_improvement(demo_data, tmp_path):
    # learning rate 0: valid NDCG@10 never improves on epoch 1, so patience 2 stops at epoch 3 of 50
    saved = sasrec_cli.main(_args(demo_data, tmp_path, learning_rate=0.0, epochs=50, patience=2))
    assert saved["best_epoch"] == 1 and saved["epochs_run"] == 3


def test_unknown_item_and_missing_file_fail_in_one_line(demo_data, tmp_path):
    bad = tmp_path / "train.csv"
    text = split_path(demo_data, "train").read_text().splitlines()
    header, first = text[0], text[1]
    first_item = load_split(split_path(demo_data, "train"))["item_id"][0]
    bad.write_text(header + "\n" + first.replace(f",{first_item},", ",99999,", 1) + "\n")
    with pytest.raises(SystemExit, match=r"train.csv: row 2: item id 99999 is not in the catalogue"):
        sasrec_cli.main(_args(demo_data, tmp_path, train_file=str(bad)))
    with pytest.raises(SystemExit, match=r"--eval_file file not found: .*nope.csv"):
        sasrec_cli.main(_args(demo_data, tmp_path, eval_file=str(tmp_path / "nope.csv")))


def test_command_line_parses_flags(demo_data, tmp_path):
    args = _args(demo_data, tmp_path)
    cmd = [sys.executable, str(ROOT / "sasrec.py"), "--hidden_size", "16", "--num_heads", "1",
           "--epochs", "1", "--patience", "1", "--device", "cpu", "--dropout", "0.1"]
    cmd += [f"--{k}={getattr(args, k)}" for k in ("train_file", "eval_file", "test_file", "sid_index_path",
                                                    "output_dir")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SASRec (test)" in done.stdout and (tmp_path / "sasrec.pt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["args"]["hidden_size"] == 16
    wrong = subprocess.run(cmd + ["--hiden_size", "8"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert wrong.returncode != 0 and "unknown flag(s): --hiden_size" in wrong.stderr


def test_info_file_catalogue_matches_the_index_json_one(demo_data, tmp_path):
    # the RL reward numbers items in index.json order; the info txt (written in that order) must agree
    info = next((demo_data / "info").glob(f"{CATEGORY}*.txt"))
    by_index = sasrec_cli.main(_args(demo_data, tmp_path / "a"))
    by_info = sasrec_cli.main(_args(demo_data, tmp_path / "b", sid_index_path="", info_file=str(info)))
    assert by_info["n_items"] == by_index["n_items"] and by_info["test"] == by_index["test"]
