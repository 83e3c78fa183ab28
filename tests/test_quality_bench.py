"""bench/quality.py end to end on the demo fixture with the smoke preset (shrunk further: 8 SFT steps,
1 GRPO step, 40 eval rows, 2 SASRec epochs) so the whole four-method run fits in well under a minute."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402


def test_smoke_preset_scores_all_methods_and_plots(demo_data, demo_category, tmp_path):
    out = tmp_path / "quality"
    result = quality.main(quality.Args(data_dir=str(demo_data), category=demo_category, preset="smoke",
                                       output_dir=str(out), eval_sample=40, sft_steps=8, rl_steps=1,
                                       sasrec_epochs=2, threads=1))
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["metrics"]) == set(quality.METHODS)
    for method, splits in saved["metrics"].items():
        for split in ("valid", "test"):
            m = splits[split]
            assert m["users"] == 40, (method, split)
            for k in quality.KS:
                assert 0.0 <= m[f"NDCG@{k}"] <= m[f"HR@{k}"] <= 1.0, (method, split, k)
    # reference curves: SFT train loss + valid NDCG@10, RL reward + valid NDCG@10 (the guard's, step 0 = SFT)
    import csv

    rows = list(csv.DictReader((out / "curves.csv").open()))
    by_metric = {(r["stage"], r["metric"]) for r in rows}
    assert by_metric == {("SFT", "train_loss"), ("SFT", "valid_NDCG@10"), ("RL", "reward"), ("RL", "valid_NDCG@10")}
    sft_steps = [int(r["step"]) for r in rows if (r["stage"], r["metric"]) == ("SFT", "valid_NDCG@10")]
    assert sft_steps == [4, 8]  # eval_step 0.5 of 8 steps
    assert (out / "curves.png").stat().st_size > 1000
    # the regression guard scored the bench's own valid rows at step 0 (SFT) and step 1, and kept the better
    guard = saved["rl"]["guard"]
    assert [c["step"] for c in guard["curve"]] == [0, 1] and guard["chosen"] >= guard["start"]
    if guard["chosen_step"] == 0:  # the SFT weights were kept: the SFT+RL rows are the SFT rows
        assert saved["metrics"]["MiniOneRec SFT+RL"] == saved["metrics"]["MiniOneRec SFT"]
    assert set(saved["summary"]["targets"]) and result["summary"] == saved["summary"]
    assert set(saved["summary"]["rl_minus_sft_paired"]) == {"valid", "test"}
    assert (out / "quality.png").stat().st_size > 1000
    # the smoke preset runs GRPO with two seeds and keeps the one with the best valid NDCG@10
    by_seed = saved["rl"]["valid_ndcg10_by_seed"]
    assert set(by_seed) == {"42", "1"} and str(saved["rl"]["chosen_seed"]) in by_seed
    assert saved["metrics"]["MiniOneRec SFT+RL"]["valid"]["NDCG@10"] == max(by_seed.values())


def test_unknown_preset_fails_early(tmp_path):
    with pytest.raises(SystemExit, match="--preset"):
        quality.main(quality.Args(preset="huge", output_dir=str(tmp_path)))


@pytest.mark.parametrize("seeds, message", [("42+x", "'\\+'-joined integers"), ("1+1", "repeats a seed")])
def test_bad_rl_seeds_fail_early(tmp_path, seeds, message):
    with pytest.raises(SystemExit, match=message):
        quality.main(quality.Args(preset="smoke", rl_seeds=seeds, output_dir=str(tmp_path / "q")))
    assert not (tmp_path / "q").exists()  # nothing written


def test_choose_on_valid_takes_the_best_valid_seed():
    assert quality.choose_on_valid({42: 0.0830, 1: 0.0856, 2: 0.0860}) == 2
    assert quality.choose_on_valid({42: 0.08, 1: 0.08}) == 42  # ties: the first seed run


def test_paired_ndcg10_hand_computed(tmp_path):
    # user 1: SFT rank 0 (1.0) -> RL rank 1 (1/log2 3); user 2: miss -> rank 0 (+1.0); user 3: rank 2 both
    rows = lambda preds: [{"item_sid": t, "predict": p} for t, p in zip("abc", preds)]  # noqa: E731
    sft = tmp_path / "sft.json"
    rl = tmp_path / "rl.json"
    sft.write_text(json.dumps(rows([["a", "x"], ["x", "y"], ["x", "y", "c"]])))
    rl.write_text(json.dumps(rows([["x", "a"], ["b"], ["x", "y", "c"]])))
    d = quality.paired_ndcg10(sft, rl)
    diffs = [1 / math.log2(3) - 1.0, 1.0, 0.0]
    mean = sum(diffs) / 3
    assert d["mean"] == pytest.approx(mean)
    assert d["se"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2 / 3))
    assert (d["better"], d["worse"], d["users"]) == (1, 1, 3)


@pytest.mark.parametrize("category", ["Demo+Demo", "+"])
def test_bad_category_list_fails_early(tmp_path, category):
    with pytest.raises(SystemExit, match="--category must be '\\+'-joined distinct names"):
        quality.main(quality.Args(preset="smoke", category=category, output_dir=str(tmp_path / "q")))
    assert not (tmp_path / "q").exists()  # nothing written
