"""bench/quality/ end to end on the demo fixture with the smoke preset (shrunk further: 8 SFT steps,
1 GRPO step, 40 eval rows, 2 SASRec epochs): all four methods scored, per-seed files, plots."""
import json
from pathlib import Path

import pytest
import yaml

from bench import quality
from bench.quality.plan import ARM_PAIRS, KS, METHODS


def test_smoke_preset_scores_all_methods_and_plots(demo_data, demo_category, tmp_path):
    out = tmp_path / "quality"
    result = quality.main(quality.Args(data_dir=str(demo_data), category=demo_category, preset="smoke",
                                       output_dir=str(out), eval_sample=40, threads=1,
                                       set="sft.max_steps=8,rl.max_steps=1,sasrec.epochs=2"))
    saved = json.loads((out / "results.json").read_text())
    # the record names each script's resolved flags by the script's own names, --set applied
    knobs = saved["knobs"]
    assert (knobs["sft"]["max_steps"], knobs["rl"]["max_steps"], knobs["sasrec"]["epochs"]) == (8, 1, 2)
    assert knobs["tiny"]["hidden_size"] == 32 and knobs["seeds"] == [42, 1] and knobs["eval_sample"] == 40
    assert list(saved["seeds"]) == ["42", "1"]  # the smoke preset's two training seeds, each a full run
    for seed, run in saved["seeds"].items():
        assert set(run["metrics"]) == set(METHODS)
        for method, splits in run["metrics"].items():
            for split in ("valid", "test"):
                m = splits[split]
                assert m["users"] == 40, (seed, method, split)
                for k in KS:
                    assert 0.0 <= m[f"NDCG@{k}"] <= m[f"HR@{k}"] <= 1.0, (seed, method, split, k)
        # reference curves: SFT train loss + valid NDCG@10, RL reward + valid NDCG@10 (the guard's, step 0 = SFT),
        # KL and the rollout diagnostics (the mean rank only where a rollout found its target)
        import csv

        seed_dir = out / f"seed_{seed}"
        rows = list(csv.DictReader((seed_dir / "curves.csv").open()))
        by_metric = {(r["stage"], r["metric"]) for r in rows}
        assert ("RL", "rollout/prefix_match_l1") in by_metric  # ... and one per further SID level
        assert {m for m in by_metric if not m[1].startswith(("rollout/prefix_match_l", "rollout/target_mean_rank"))} == {
            ("SFT", "train_loss"), ("SFT", "valid_NDCG@10"), ("RL", "reward"), ("RL", "valid_NDCG@10"), ("RL", "kl"),
            ("RL", "rollout/frac_groups_zero_std"), ("RL", "rollout/target_hit_rate")}
        sft_steps = [int(r["step"]) for r in rows if (r["stage"], r["metric"]) == ("SFT", "valid_NDCG@10")]
        assert sft_steps == [4, 8]  # rank_eval_every 0.5 of 8 steps
        assert (seed_dir / "curves.png").stat().st_size > 1000
        assert (seed_dir / "quality.png").stat().st_size > 1000
        # the regression guard scored the bench's own valid rows at step 0 (SFT) and step 1, and kept the better
        guard = run["guard"]
        assert [c["step"] for c in guard["curve"]] == [0, 1] and guard["chosen"] >= guard["start"]
        if guard["chosen_step"] == 0:  # the SFT weights were kept: the SFT+RL rows are the SFT rows
            assert run["metrics"]["MiniOneRec SFT+RL"] == run["metrics"]["MiniOneRec SFT"]
        assert set(run["summary"]["targets"]) and set(run["summary"]["rl_minus_sft_paired"]) == {"valid", "test"}
        # the demo index has no shared SIDs: SASRec scores the same by SID as by item id
        by_item, by_sid = (run["metrics"][m]["test"]["NDCG@10"] for m in ("SASRec", "SASRec by SID"))
        assert by_sid == pytest.approx(by_item)
        assert run["summary"]["minionerec_over_sasrec_by_sid_test"] == pytest.approx(
            run["summary"]["minionerec_over_sasrec_test"])
    # the seeds differ (init and data order), the rows scored do not (same users for paired differences)
    sft = {seed: run["metrics"]["MiniOneRec SFT"]["valid"] for seed, run in saved["seeds"].items()}
    assert sft["42"] != sft["1"] and sft["42"]["users"] == sft["1"]["users"]
    # over seeds: per-seed values, their mean and spread, and RL - SFT paired over seeds and users
    agg = saved["over_seeds"]
    for method in METHODS:
        d = agg["ndcg10"][method]["valid"]
        values = [saved["seeds"][s]["metrics"][method]["valid"]["NDCG@10"] for s in ("42", "1")]
        assert d["per_seed"] == values and d["mean"] == pytest.approx(sum(values) / 2)
        assert d["spread"] == pytest.approx(max(values) - min(values))
    rl = agg["rl_minus_sft"]["valid"]
    assert rl["seeds"] == 2 and rl["per_seed"] == [saved["seeds"][s]["summary"]["rl_minus_sft_paired"]["valid"]["mean"]
                                                   for s in ("42", "1")]
    assert result["over_seeds"] == agg


def test_gpu_pretrained_preset_cpu_smoke(tmp_path, demo_data, demo_category):
    """--preset gpu_pretrained's recipe, shrunk to seconds, SFT from a given base model (a tiny random Llama here,
    SmolLM2's architecture) instead of a tiny model per seed; no base model: a one-line error."""
    from minionerec.model.tiny import build_tiny_model

    with pytest.raises(SystemExit, match="no model directory there"):
        quality.main(quality.Args(preset="gpu_pretrained", base_model=str(tmp_path / "none"), data_dir=str(demo_data),
                                  category=demo_category, output_dir=str(tmp_path / "none_out")))
    assert quality.resolve(quality.Args(preset="gpu_pretrained")).base_model.endswith("models/SmolLM2-135M")
    index, meta = (demo_data / "index" / f"{demo_category}.{kind}.json" for kind in ("index", "item"))
    base = build_tiny_model(tmp_path / "llama", index, meta, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=64, vocab_size=600, architecture="llama")
    shrink = ("sft.max_steps=4,sft.batch_size=8,sft.micro_batch_size=8,sft.eval_sample=8,sft.rank_eval_every=0.5,"
              "sft.task_item_alignment=false,sft.task_sid_history_title=false,sft.task_title_history_title=false,"
              "sft.task_title_history_sid=false,rl.max_steps=1,rl.batch_size=8,rl.micro_batch_size=8,rl.num_generations=4,"
              "rl.rank_eval_every=1,sasrec.epochs=1,evaluate.num_beams=20,evaluate.batch_size=8")
    result = quality.main(quality.Args(preset="gpu_pretrained", base_model=str(base), data_dir=str(demo_data),
                                       category=demo_category, set=shrink, output_dir=str(tmp_path / "q"),
                                       eval_sample=12, threads=1))
    assert result["knobs"]["base_model"] == str(base) and result["knobs"]["sft"]["prompt_style"] == "upstream"
    run = result["seeds"][42]
    assert "tiny Qwen2 base model" not in run["timings_s"] and not (tmp_path / "q" / "seed_42" / "base_model").exists()
    for method in ("MiniOneRec SFT", "MiniOneRec SFT+RL"):
        assert run["metrics"][method]["test"]["invalid"] == 0 and run["metrics"][method]["test"]["users"] == 12


def test_smoke_preset_with_a_pretrained_base_model_adds_the_scratch_arm(tmp_path, demo_data, demo_category, capsys):
    """--preset smoke from a base model directory (a tiny random Llama, as `python -m minionerec.model.tiny
    --architecture llama` writes it) also trains its architecture from random weights the same way: one table of
    both arms and the baselines, and pretrained - scratch / - SASRec paired over seeds and users."""
    from minionerec.model.tiny import build_tiny_model

    index, meta = (demo_data / "index" / f"{demo_category}.{kind}.json" for kind in ("index", "item"))
    base = build_tiny_model(tmp_path / "llama", index, meta, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=64, vocab_size=600, architecture="llama")
    out = tmp_path / "quality"
    quality.main(quality.Args(data_dir=str(demo_data), category=demo_category, preset="smoke", base_model=str(base),
                              output_dir=str(out), eval_sample=40, threads=1,
                              set="sft.max_steps=8,rl.max_steps=1,sasrec.epochs=2"))
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["knobs"]["scratch_arm"] is True
    arm_methods = ["scratch SFT", "scratch SFT+RL", "MiniOneRec SFT", "MiniOneRec SFT+RL"]
    for seed, run in saved["seeds"].items():
        assert list(run["metrics"]) == ["popularity", "SASRec", "SASRec by SID", *arm_methods]
        assert sorted(run["predictions"]) == sorted(arm_methods)
        scratch = out / f"seed_{seed}" / "scratch"
        assert (scratch / "curves.csv").is_file() and run["scratch"]["guard"]["curve"][0]["step"] == 0
        from_scratch = {arm: yaml.safe_load((d / "sft" / "run_config.yaml").read_text())["args"]["train_from_scratch"]
                        for arm, d in (("scratch", scratch), ("main", out / f"seed_{seed}"))}
        assert from_scratch == {"scratch": {"value": True, "source": "command line"},
                                "main": {"value": False, "source": "default"}}
    agg = saved["over_seeds"]
    assert list(agg["pretrained_vs_scratch"]) == [label for label, _, _ in ARM_PAIRS]
    for label, a, b in ARM_PAIRS:  # per seed, the paired mean is the table's difference (SASRec on item ids)
        for split in ("valid", "test"):
            d = agg["pretrained_vs_scratch"][label][split]
            assert d["seeds"] == 2 and d["per_seed"] == pytest.approx(
                [r["metrics"][b][split]["NDCG@10"] - r["metrics"][a][split]["NDCG@10"] for r in saved["seeds"].values()])
            assert f"{label} NDCG@10 on {split}, paired over seeds and users: {d['mean']:+.4f}" in printed
    assert set(agg["scratch_over_sasrec"]) == {"valid", "test"}
    table = printed[printed.index(f"== {demo_category}: pretrained vs scratch vs SASRec (40 valid, 40 test users"):]
    rows = [(line[:5].strip(), line[6:24].strip()) for line in table.splitlines()[3:17]]  # split, method columns
    assert rows == [(split, m) for split in ("valid", "test") for m in ["popularity", "SASRec", "SASRec by SID", *arm_methods]]
    assert "== NDCG@10 by seed" not in printed  # the single-arm tables give way to the one table


def test_smoke_preset_sids_auto_keeps_the_best_candidate_on_valid(demo_data, demo_category, tmp_path, capsys):
    """--sids auto over the release and two TF-IDF indexes (RQ-KMeans, balanced RQ-KMeans; one embedding run): each
    trains SFT with the first seed and is scored on the valid sample, the candidates table is printed and recorded,
    and the bench (every seed) trains on the best one's data."""
    names = ["release", "tfidf+rqkmeans", "tfidf+balanced_rqkmeans"]
    out = tmp_path / "quality"
    quality.main(quality.Args(data_dir=str(demo_data), category=demo_category, preset="smoke", stages="sft",
                              sids="auto", sid_candidates=",".join(names), sid_shape="3x16", output_dir=str(out),
                              eval_sample=40, threads=1, set="sft.max_steps=8"))
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    record = saved["sids"]
    assert list(record["candidates"]) == names and record["mode"] == "auto" and record["selection_seed"] == 42
    scores = {name: record["candidates"][name]["ndcg10_by_item"] for name in names}
    chosen = record["chosen"]
    assert chosen == max(names, key=scores.get)  # by item; the first listed on a tie
    for name in names:  # no index here gives one SID to two items: by item is by SID
        assert scores[name] == pytest.approx(record["candidates"][name]["ndcg10"])
    for name in names[1:]:  # paired by item id against the release, on the same 40 valid rows
        d = record["candidates"][name]["vs_release"]
        assert d["users"] == 40 and d["mean"] == pytest.approx(scores[name] - scores["release"])
    for name in names:  # the choice trained the first seed only
        assert [p.name for p in (out / "sids" / name).glob("sft_seed_*")] == ["sft_seed_42"]
    table = printed[printed.index(f"== {demo_category}: SID candidates (SFT seed 42, 40 valid users"):].splitlines()
    assert [line.split()[0] for line in table[2:5]] == names and f"{chosen} *" in table[2 + names.index(chosen)]
    assert f"{scores[chosen]:.4f}" in table[2 + names.index(chosen)] and table[5].endswith(f"trains on: {chosen}")
    # the bench trained every seed on the chosen data: its index, its splits; seed 42's SFT is the choice's own run
    chosen_dir = str(demo_data) if chosen == "release" else str(out / "sids" / chosen)
    assert record["data_dir"] == chosen_dir and saved["data"]["train"].startswith(chosen_dir)
    sft_dirs = {seed: saved["seeds"][seed]["sft_dir"] for seed in ("42", "1")}
    assert sft_dirs == {"42": str(out / "sids" / chosen / "sft_seed_42" / "sft"), "1": str(out / "seed_1" / "sft")}
    assert not (out / "seed_42" / "sft").exists() and "[quality] SFT: the SID choice's run of seed 42" in printed
    for seed in ("42", "1"):
        flags = yaml.safe_load(Path(sft_dirs[seed], "run_config.yaml").read_text())["args"]
        assert flags["train_file"]["value"] == saved["data"]["train"]
        assert flags["sid_index_path"]["value"] == saved["data"]["index"]
    # same seed, same steps, same rows: the choice's figure is the bench's seed-42 SFT valid NDCG@10
    assert saved["seeds"]["42"]["metrics"]["MiniOneRec SFT"]["valid"]["NDCG@10"] == pytest.approx(scores[chosen])
    # the reference: the chosen SIDs pinned (--sids <chosen>) retrain seed 42's SFT and score it the same on both splits
    pinned = quality.main(quality.Args(data_dir=str(demo_data), category=demo_category, preset="smoke", stages="sft",
                                       sids=chosen, sid_shape="3x16", output_dir=str(tmp_path / "pinned"), seeds="42",
                                       eval_sample=40, threads=1, set="sft.max_steps=8"))
    assert pinned["seeds"][42]["sft_dir"] == str(tmp_path / "pinned" / "seed_42" / "sft")
    for split in ("valid", "test"):
        assert pinned["seeds"][42]["metrics"]["MiniOneRec SFT"][split] == \
            saved["seeds"]["42"]["metrics"]["MiniOneRec SFT"][split]
