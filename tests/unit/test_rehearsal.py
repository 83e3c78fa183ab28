"""minionerec.launch.rehearsal.substitutions: the flags that make a recipe a CPU rehearsal, each said in the report."""
from __future__ import annotations

import pandas as pd

from minionerec.launch.rehearsal import EVAL_LOSS_ROWS, STOP, substitutions


def test_sft_eval_loss_runs_on_the_first_rows_of_the_eval_file_as_written(tmp_path):
    valid = tmp_path / "valid.csv"
    ids = ["0x1A", "007", "", *[str(i) for i in range(EVAL_LOSS_ROWS + 7)]]
    pd.DataFrame({"user_id": ids, "item_id": ids}).to_csv(valid, index=False)
    flags, notes = substitutions("sft.py", {"eval_file": str(valid), "eval_steps": 200}, None, tmp_path)
    kept = pd.read_csv(flags["eval_file"], dtype=str, keep_default_na=False)
    assert kept["user_id"].tolist() == ids[:EVAL_LOSS_ROWS]  # hex, leading zeros and empty values unchanged
    assert flags["eval_steps"] == STOP
    assert f"eval_file: its first {EVAL_LOSS_ROWS} of {len(ids):,} rows for the eval loss" in notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_rows.csv", "valid.csv"]  # no temporary file left


def test_a_small_eval_file_and_rl_are_left_alone(tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    pd.DataFrame({"user_id": range(EVAL_LOSS_ROWS)}).to_csv(small, index=False)
    pd.DataFrame({"user_id": range(EVAL_LOSS_ROWS + 1)}).to_csv(large, index=False)
    assert "eval_file" not in substitutions("sft.py", {"eval_file": str(small)}, None, tmp_path)[0]
    assert "eval_file" not in substitutions("rl.py", {"eval_file": str(large)}, None, tmp_path)[0]  # RL: eval_sample
