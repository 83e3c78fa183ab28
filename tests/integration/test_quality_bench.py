"""bench/quality/ end to end on the demo fixture with the smoke preset (shrunk further with --set: 8 SFT steps,
1 GRPO step, 2 SASRec epochs; 40 eval rows) so the whole four-method run fits in well under a minute."""
import json
import math
from pathlib import Path

import pytest
import yaml

from bench import quality
from bench.quality.aggregate import paired_methods, paired_ndcg10
from bench.quality.plan import METHODS, ROOT, arms, data_paths, method_order, sids_of
from bench.quality.sid_choice import dataset_sids


def test_unknown_preset_fails_early(tmp_path):
    with pytest.raises(SystemExit, match="--preset"):
        quality.main(quality.Args(preset="huge", output_dir=str(tmp_path)))


@pytest.mark.parametrize("seeds, message", [("42+x", "'\\+'-joined integers"), ("1+1", "repeats a seed")])
def test_bad_seeds_fail_early(tmp_path, seeds, message):
    with pytest.raises(SystemExit, match=message):
        quality.main(quality.Args(preset="smoke", seeds=seeds, output_dir=str(tmp_path / "q")))
    assert not (tmp_path / "q").exists()  # nothing written


def test_set_overrides_the_recipe_by_the_scripts_flag_names(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes" / "quality_smoke.yaml").read_text())
    plan = quality.resolve(quality.Args(preset="smoke", set="sft.learning_rate=1e-3, rl.beta=0,tiny.hidden_size=64,"
                                                          "rl.lora_target_modules=q_proj,v_proj"))
    assert (plan.sft.learning_rate, plan.rl.beta, plan.tiny.hidden_size) == (1e-3, 0.0, 64)  # typed by parse_args
    assert plan.rl.lora_target_modules == "q_proj,v_proj"  # a value may hold commas
    assert plan.sft.max_steps == recipe["sft"]["max_steps"] and plan.rl.learning_rate == recipe["rl"]["learning_rate"]
    for bad, message in [("sftt.max_steps=1", "unknown section 'sftt' \\(did you mean 'sft'\\?\\)"),
                         ("sft.lerning_rate=1", "sft has no flag 'lerning_rate' \\(did you mean 'learning_rate'\\?\\)"),
                         ("sft.max_steps=many", "--set sft.max_steps: expected int, got 'many'"),
                         ("rl.add_gt=maybe", "--set rl.add_gt: expected true/false"),
                         ("sft.seed=1", "set by the bench itself"),
                         ("max_steps=1", "expected section.flag=value")]:
        with pytest.raises(SystemExit, match=message) as e:
            quality.main(quality.Args(preset="smoke", set=bad, output_dir=str(tmp_path / "q")))
        assert str(e.value.code).startswith("error: ") and "\n" not in str(e.value.code)
    assert not (tmp_path / "q").exists()  # nothing written


def test_recipe_flag_runs_another_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sft:\n  max_steps: 3\nevaluate:\n  num_beams: 30\n")
    plan = quality.resolve(quality.Args(preset="smoke", recipe=str(recipe)))
    assert (plan.sft.max_steps, plan.evaluate.num_beams, plan.recipe) == (3, 30, str(recipe))
    assert plan.tiny.hidden_size == 64 and plan.seeds == [42, 1]  # no tiny section: its defaults; the preset's seeds
    recipe.write_text("quality:\n  hidden_size: 32\n")
    with pytest.raises(SystemExit, match="unknown section 'quality'"):
        quality.resolve(quality.Args(preset="smoke", recipe=str(recipe)))
    recipe.write_text("rl:\n  num_generations: 3\n  batch_size: 8\n")
    with pytest.raises(SystemExit, match="rl.num_generations 3 must divide rl.batch_size 8"):
        quality.resolve(quality.Args(preset="smoke", recipe=str(recipe)))


def test_curves_hold_every_logged_metric_and_draw_the_rollout_diagnostics(tmp_path):
    import csv

    from bench.quality.report import write_curves
    from bench.quality.stages import curve

    # rl.py's log: TRL writes None for a step whose rollouts never found the target (no mean rank): not a point
    history = [{"step": 1, "reward": 0.1, "rollout/target_hit_rate": 0.0, "rollout/target_mean_rank": None},
               {"step": 2, "reward": 0.3, "rollout/target_hit_rate": 0.5, "rollout/target_mean_rank": 2.0}]
    assert curve(history, "rollout/target_mean_rank") == [[2, 2.0]]
    rl_curves = {key: curve(history, key) for key in ("reward", "rollout/target_hit_rate", "rollout/target_mean_rank")}
    write_curves({"SFT": {"train_loss": [[1, 2.0]]}, "RL": {**rl_curves, "rollout/prefix_match_l1": [[1, 0.25]]}},
                 tmp_path, "t")
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert [(r["stage"], r["step"], r["metric"], r["value"]) for r in rows] == [
        ("SFT", "1", "train_loss", "2"), ("RL", "1", "reward", "0.1"), ("RL", "2", "reward", "0.3"),
        ("RL", "1", "rollout/target_hit_rate", "0"), ("RL", "2", "rollout/target_hit_rate", "0.5"),
        ("RL", "2", "rollout/target_mean_rank", "2"), ("RL", "1", "rollout/prefix_match_l1", "0.25")]
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_paired_ndcg10_hand_computed(tmp_path):
    # user 1: SFT rank 0 (1.0) -> RL rank 1 (1/log2 3); user 2: miss -> rank 0 (+1.0); user 3: rank 2 both
    rows = lambda preds: [{"item_sid": t, "predict": p} for t, p in zip("abc", preds)]  # noqa: E731
    sft = tmp_path / "sft.json"
    rl = tmp_path / "rl.json"
    sft.write_text(json.dumps(rows([["a", "x"], ["x", "y"], ["x", "y", "c"]])))
    rl.write_text(json.dumps(rows([["x", "a"], ["b"], ["x", "y", "c"]])))
    d = paired_ndcg10(sft, rl)
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


def fake_run(root: Path, category: str, seeds: dict) -> Path:
    """A bench output directory: results.json naming per-seed SFT predictions (seed -> list of ranked lists)."""
    runs = {}
    for seed, preds in seeds.items():
        path = root / f"pred_{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"item_sid": t, "predict": p} for t, p in zip("ab", preds)]))
        runs[seed] = {"predictions": {"MiniOneRec SFT": {"valid": str(path)}}}
    (root / "results.json").write_text(json.dumps({"category": category, "seeds": runs}))
    return root


def test_compare_seeds_pairs_common_seeds_over_users(tmp_path):
    from bench import compare_seeds

    # seed 1: A hits user a at rank 0, B at rank 1; user b missed by both. seed 2: B hits b at rank 0, A misses.
    a = fake_run(tmp_path / "a", "Demo", {"1": [["a"], ["x"]], "2": [["a"], ["x"]], "3": [["a"], ["b"]]})
    b = fake_run(tmp_path / "b", "Demo", {"1": [["x", "a"], ["x"]], "2": [["a"], ["b"]]})
    d = compare_seeds.main(compare_seeds.Args(a=str(a), b=str(b)))["Demo"]["MiniOneRec SFT"]["valid"]
    seed1, seed2 = (1 / math.log2(3) - 1) / 2, 1 / 2  # per-user means of B - A
    assert d["seed_ids"] == ["1", "2"]  # seed 3 ran only in A
    assert d["per_seed"] == pytest.approx([seed1, seed2]) and d["mean"] == pytest.approx((seed1 + seed2) / 2)
    assert not d["exceeds_noise"]  # the seeds disagree in sign


def test_compare_seeds_reads_one_run_per_seed_joined_with_commas(tmp_path):
    from bench import compare_seeds

    whole = {"1": [["a"], ["x"]], "2": [["x"], ["b"]]}
    a = fake_run(tmp_path / "a", "Demo", whole)
    a1, a2 = (fake_run(tmp_path / f"a{s}", "Demo", {s: whole[s]}) for s in whole)
    b = fake_run(tmp_path / "b", "Demo", {"1": [["x", "a"], ["x"]], "2": [["a"], ["b"]]})
    joined = compare_seeds.main(compare_seeds.Args(a=f"{a1},{a2}", b=str(b)))
    assert joined == compare_seeds.main(compare_seeds.Args(a=str(a), b=str(b)))
    with pytest.raises(SystemExit, match="--a: Demo seed 1 is in two of its directories"):
        compare_seeds.main(compare_seeds.Args(a=f"{a1},{a}", b=str(b)))
    # seed runs with more methods (--stages all beside --stages sft): only the methods every seed has are paired
    for run in (a1, b):
        results = json.loads((run / "results.json").read_text())
        for predictions in (r["predictions"] for r in results["seeds"].values()):
            predictions["MiniOneRec SFT+RL"] = predictions["MiniOneRec SFT"]
        (run / "results.json").write_text(json.dumps(results))
    assert compare_seeds.main(compare_seeds.Args(a=f"{a1},{a2}", b=str(b))) == joined  # a2's seed 2 has SFT only


def test_compare_seeds_by_item_takes_a_shared_sid_as_one_item(tmp_path):
    """Run A's index gives items 1 and 2 one SID x (2 is its usual train target), run B's gives each item its own.
    User 1 wants item 1: A writes x (a hit by SID, item 2 by item), B writes p (a hit). User 2 wants item 3: A hits
    at rank 1, B at rank 2."""
    from bench import compare_seeds

    header = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    x, y, p, q, r = (f"<a_{n}>" for n in range(5))  # one-token SIDs
    sids = {"A": {"1": x, "2": x, "3": y}, "B": {"1": p, "2": q, "3": r}}
    preds = {"A": [[x], [y]], "B": [[p], [q, r]]}
    runs = {}
    for name, sid_of in sids.items():
        root = tmp_path / name
        root.mkdir()
        (root / "index.json").write_text(json.dumps({i: [s] for i, s in sid_of.items()}))
        (root / "train.csv").write_text(header + "".join(f"u{n},\"['t']\",t,[3],{i},['{sid_of['3']}'],{sid_of[i]}\n"
                                                         for n, i in enumerate(["2", "2", "1"])))
        (root / "pred.json").write_text(json.dumps([{"item_id": i, "item_sid": sid_of[i], "predict": p}
                                                    for i, p in zip(["1", "3"], preds[name])]))
        (root / "results.json").write_text(json.dumps({
            "category": "Demo", "data": {"index": str(root / "index.json"), "train": str(root / "train.csv")},
            "seeds": {"1": {"predictions": {"MiniOneRec SFT": {"valid": str(root / "pred.json")}}}}}))
        runs[name] = str(root)
    r2 = 1 / math.log2(3)
    diff = {by: compare_seeds.main(compare_seeds.Args(a=runs["A"], b=runs["B"], by=by))["Demo"]["MiniOneRec SFT"]["valid"]
            for by in ("sid", "item")}
    assert (diff["sid"]["a"], diff["sid"]["mean"]) == (1.0, pytest.approx((r2 - 1) / 2))
    assert (diff["item"]["a"], diff["item"]["mean"]) == (0.5, pytest.approx(r2 / 2))
    with pytest.raises(SystemExit, match="--by sid or item"):
        compare_seeds.main(compare_seeds.Args(a=runs["A"], b=runs["B"], by="user"))


def test_compare_seeds_needs_bench_outputs(tmp_path):
    from bench import compare_seeds

    with pytest.raises(SystemExit, match="--a .*: no results.json"):
        compare_seeds.main(compare_seeds.Args(a=str(tmp_path), b=str(tmp_path)))




def test_scratch_arm_runs_beside_a_pretrained_base_model_only(tmp_path):
    plan = lambda **kw: quality.resolve(quality.Args(**kw))  # noqa: E731
    assert not plan(preset="smoke").scratch_arm  # a tiny model per seed: from scratch already
    assert method_order(plan(preset="smoke")) == list(METHODS)
    pretrained = plan(preset="gpu_pretrained")
    assert pretrained.scratch_arm and pretrained.record()["scratch_arm"] is True
    assert [a.name for a in arms(pretrained)] == ["MiniOneRec", "scratch"]  # the main arm trains first
    assert method_order(pretrained) == ["popularity", "SASRec", "SASRec by SID", "scratch SFT", "scratch SFT+RL",
                                                "MiniOneRec SFT", "MiniOneRec SFT+RL"]
    assert plan(preset="smoke", base_model=str(tmp_path)).scratch_arm  # any base model directory
    assert not plan(preset="gpu_pretrained", scratch_arm="off").scratch_arm
    assert not plan(preset="gpu_pretrained", set="sft.train_from_scratch=true").scratch_arm  # no pretrained arm
    for kw, message in [(dict(preset="smoke", scratch_arm="on"), "needs SFT from a pretrained base model"),
                        (dict(preset="gpu_pretrained", scratch_arm="on", set="sft.lora_r=8"), "needs SFT from a"),
                        (dict(preset="gpu_pretrained", scratch_arm="yes"), "--scratch_arm must be auto, on or off")]:
        with pytest.raises(SystemExit, match=message):
            plan(**kw)


def test_paired_methods_scores_sasrec_on_item_ids(tmp_path):
    # items 1 and 2 share SID "s": the LLM's "s" hits target item 2; SASRec ranks item 1 first, item 2 second
    llm, sasrec = tmp_path / "llm.json", tmp_path / "sasrec.json"
    llm.write_text(json.dumps([{"item_id": 2, "item_sid": "s", "predict": ["s"]},
                               {"item_id": 3, "item_sid": "t", "predict": ["x"]}]))
    sasrec.write_text(json.dumps([{"item_id": "2", "predict": ["1", "2"]}, {"item_id": "3", "predict": ["3"]}]))
    run = {"predictions": {"MiniOneRec SFT+RL": {"test": str(llm)}}, "sasrec": {"predictions": {"test": str(sasrec)}}}
    d = paired_methods(run, "SASRec", "MiniOneRec SFT+RL", "test")
    assert (d["a"], d["b"]) == (pytest.approx((1 / math.log2(3) + 1) / 2), 0.5)  # SASRec: item 2 at rank 1, not 0
    sasrec.write_text(json.dumps([{"item_id": "3", "predict": ["3"]}, {"item_id": "2", "predict": ["2"]}]))
    with pytest.raises(SystemExit, match="scored different test rows"):
        paired_methods(run, "SASRec", "MiniOneRec SFT+RL", "test")


@pytest.mark.parametrize("flags, message", [
    (dict(sids="bert+rqkmeans"), "unknown encoder 'bert'; encoders: tfidf, minilm, smollm2"),
    (dict(sids="tfidf+kmeans"), "unknown quantiser 'kmeans'; quantisers: rqkmeans, balanced_rqkmeans"),
    (dict(sids="tfidf"), "'tfidf' is not release or <encoder>\\+<quantiser>"),
    (dict(sids="tfidf+rqkmeans+rqvae"), "is not release or <encoder>\\+<quantiser>"),
    (dict(sids="auto", sid_candidates="release,tfidf+rqkmeans,release"), "--sid_candidates repeats a candidate"),
    (dict(sids="auto", sid_candidates="release,tfidf+rqkmeans,"), "--sid_candidates: '' is not release or"),
    (dict(sids="auto", sid_candidates="release+tfidf+rqkmeans"),
     "--sid_candidates: 'release\\+tfidf\\+rqkmeans' is not release .*candidates are ','-joined"),
    (dict(sids="auto", sid_candidates="release,tfidf+rqvqe"), "--sid_candidates tfidf\\+rqvqe: unknown quantiser"),
    # fire passes "release,minilm" (bare words only) as a tuple; the str flag holds its repr
    (dict(sids="auto", sid_candidates=str(("release", "minilm"))), "--sid_candidates: 'minilm' is not release"),
    (dict(sids="tfidf+rqkmeans", sid_shape="3by256"), "--sid_shape must be <levels>x<codes per level>"),
])
def test_bad_sid_flags_fail_early(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message) as e:
        quality.main(quality.Args(preset="smoke", output_dir=str(tmp_path / "q"), **flags))
    assert str(e.value.code).startswith("error: ") and "\n" not in str(e.value.code)
    assert not (tmp_path / "q").exists()  # nothing written


@pytest.fixture
def minilm_dir(monkeypatch, tmp_path):
    """A stand-in for models/all-MiniLM-L6-v2: parsing checks only that the local model is there, and must not
    depend on `make minilm` having run (the quick start is make install; make test)."""
    from bench import sids

    (tmp_path / "config.json").write_text("{}")
    library, _, make = sids.ENCODERS["minilm"]
    monkeypatch.setitem(sids.ENCODERS, "minilm", (library, str(tmp_path), make))
    return tmp_path


def test_sid_flags_parse_into_a_plan(monkeypatch, minilm_dir):
    from bench import sids

    assert sids.parse("release", "anything", "3x256") == sids.SidPlan("release", (sids.Candidate(),), 3, 256)
    one = sids.parse("tfidf+balanced_rqkmeans", "", "2x64")
    assert (one.mode, [c.name for c in one.candidates], one.levels, one.codebook_size) == (
        "one", ["tfidf+balanced_rqkmeans"], 2, 64)
    auto = sids.parse("auto", sids.CANDIDATES, quality.Args.sid_shape)
    assert auto.mode == "auto" and [c.name for c in auto.candidates] == sids.CANDIDATES.split(",")
    # an encoder's local model is checked before anything is built: nothing is downloaded
    monkeypatch.setitem(sids.ENCODERS, "minilm", ("sentence_transformers", "models/no-such-model", "make minilm"))
    with pytest.raises(SystemExit, match="encoder minilm needs the local model models/no-such-model \\(make minilm"):
        sids.parse("auto", "release,minilm+rqkmeans", "3x256")


def test_presets_choose_their_sids_and_flags_override_them(minilm_dir):
    """The cpu preset chooses SIDs per dataset on valid (release vs TF-IDF: bench/RESULTS.md); the others train on
    the release; --sids and --sid_candidates win over the preset's."""
    def plan(**flags):
        p = sids_of(quality.Args(**flags))
        return p.mode, [c.name for c in p.candidates]

    assert plan(preset="cpu") == ("auto", ["release", "tfidf+rqkmeans"])
    assert plan(preset="cpu", sids="release") == ("release", ["release"])
    assert plan(preset="cpu", sid_candidates="release,minilm+rqkmeans") == ("auto", ["release", "minilm+rqkmeans"])
    for preset in ("smoke", "gpu", "gpu_pretrained"):
        assert plan(preset=preset) == ("release", ["release"])
    assert plan(preset="smoke", sids="auto") == ("auto", ["release", "tfidf+rqkmeans", "minilm+rqkmeans"])


def test_one_sid_candidate_is_built_reindexed_and_reported(tmp_path, demo_data, demo_category, capsys):
    """--sids tfidf+rqkmeans: the dataset re-indexed into <out>/sids/tfidf+rqkmeans/ (same rows and item ids, the new
    index's SIDs), no training to choose, the report printed and recorded."""
    import pandas as pd

    from bench import sids
    from minionerec.data.formats import load_sid_index

    args = quality.Args(data_dir=str(demo_data), category=demo_category, preset="smoke", sids="tfidf+rqkmeans",
                        sid_shape="3x16")
    sid_plan = sids.parse(args.sids, args.sid_candidates, args.sid_shape)
    data_dir, record, trained = dataset_sids(args, quality.resolve(args), sid_plan, demo_category, tmp_path)
    assert trained is None  # one candidate: nothing trained to choose
    assert data_dir == str(tmp_path / "sids" / "tfidf+rqkmeans") == record["data_dir"]
    assert record["chosen"] == "tfidf+rqkmeans" and record["mode"] == "one" and record["note"] is None
    stats = record["candidates"]["tfidf+rqkmeans"]["stats"]
    assert stats["collision_groups"] == 0 and len(stats["codes_used"]) == 3 and max(stats["codes_used"]) <= 16
    assert "ndcg10" not in record["candidates"]["tfidf+rqkmeans"]  # one candidate: nothing to choose, no SFT
    paths = data_paths(data_dir, demo_category)
    index = load_sid_index(paths["index"])
    for split in ("train", "valid", "test"):
        old, new = pd.read_csv(data_paths(str(demo_data), demo_category)[split]), pd.read_csv(paths[split])
        assert list(old["item_id"]) == list(new["item_id"])
        assert list(new["item_sid"]) == ["".join(index[str(i)]) for i in new["item_id"]]
    assert "== Demo: SID candidates\n" in capsys.readouterr().out


def test_two_quantisers_share_one_embedding_run(tmp_path, demo_data, demo_category, capsys):
    import shutil

    from bench import sids

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    plan = sids.parse("auto", "release,tfidf+rqkmeans,tfidf+balanced_rqkmeans", "3x16")
    built, note = sids.prepare(plan, str(data), demo_category, tmp_path / "sids")
    assert note is None and [b.name for b in built] == ["release", "tfidf+rqkmeans", "tfidf+balanced_rqkmeans"]
    assert built[0].data_dir == str(data) and built[0].stats["items"] == built[1].stats["items"] == 80
    printed = capsys.readouterr().out
    assert printed.count("[text2emb]") == 1 and printed.count("tfidf embeddings: ") == 1  # embedded once, then cached
    assert built[2].stats["levels"][0]["largest"] == 5  # balanced: 80 items over 16 first-level codes
    meta_path = data / "index" / f"{demo_category}.item.json"  # another text: embedded again, not the cache
    meta_path.write_text(meta_path.read_text().replace("work", "play"))
    sids.prepare(sids.parse("tfidf+rqkmeans", "", "3x16"), str(data), demo_category, tmp_path / "sids")
    assert capsys.readouterr().out.count("[text2emb]") == 1


def test_a_registered_quantiser_is_picked_up_by_name(tmp_path, demo_data, demo_category, monkeypatch, capsys):
    """A new quantiser is a module (Args on the shared flags, main writing the index) plus one rq.QUANTISERS entry:
    --sids <encoder>+<its name> parses, builds and reindexes with it, no other code told."""
    import sys
    import types
    from dataclasses import dataclass

    import numpy as np

    from minionerec import rq
    from bench import sids
    from minionerec.data.formats import load_sid_index
    from minionerec.rq.common import QuantArgs, load_embeddings
    from minionerec.rq.index import write_index

    @dataclass
    class Args(QuantArgs):
        """Row order in base codebook_size: item k of the embeddings gets k's digits (unique while N <= size^L)."""

    def main(args):
        item_ids, _ = load_embeddings(args.embedding_path)
        size, rows = int(args.codebook_size), np.arange(len(item_ids))
        codes = np.stack([rows // size ** (args.levels - 1 - level) % size for level in range(args.levels)], axis=1)
        write_index(item_ids, codes, args.output_path)
        return codes

    module = types.ModuleType("toy_quantiser")
    module.Args, module.main = Args, main
    monkeypatch.setitem(sys.modules, "toy_quantiser", module)
    monkeypatch.setitem(rq.QUANTISERS, "toy", "toy_quantiser")
    plan = sids.parse("tfidf+toy", "", "3x16")
    (built,), note = sids.prepare(plan, str(demo_data), demo_category, tmp_path / "sids")
    assert note is None and built.name == "tfidf+toy" and built.data_dir == str(tmp_path / "sids" / "tfidf+toy")
    index = load_sid_index(tmp_path / "sids" / "tfidf+toy" / "index" / f"{demo_category}.index.json")
    assert list(index.values())[17] == ["<a_0>", "<b_1>", "<c_1>"]  # row 17 = 0*256 + 1*16 + 1
    assert built.stats["items"] == 80 and built.stats["collision_groups"] == 0
    assert "[sids] tfidf+toy: toy_quantiser 3x16 -> " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown quantiser 'toys'; quantisers: rqkmeans, .*, rqvae, toy$"):
        sids.parse("tfidf+toys", "", "3x16")

def test_items_without_text_keep_the_release_sids(tmp_path, demo_data, demo_category, capsys):
    import shutil

    from bench import sids

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    meta_path = data / "index" / f"{demo_category}.item.json"
    meta = json.loads(meta_path.read_text())
    first = next(iter(meta))
    meta[first].update(title="", description="")
    meta_path.write_text(json.dumps(meta))
    args = quality.Args(data_dir=str(data), category=demo_category, preset="smoke", sids="tfidf+rqkmeans",
                        sid_shape="3x16")
    data_dir, record, _ = dataset_sids(args, quality.resolve(args), sids.parse(args.sids, "", args.sid_shape),
                                            demo_category, tmp_path / "out")
    assert data_dir == str(data) and record["chosen"] == "release" and list(record["candidates"]) == ["release"]
    note = f"no usable item text (item {first} has an empty title and description (1 of 80 items)): keeping the " \
           "release SIDs, not tfidf+rqkmeans"
    assert record["note"] == note and f"[quality] {demo_category}: {note}" in capsys.readouterr().out
    assert not (tmp_path / "out" / "sids" / "embeddings").exists()  # nothing embedded
