"""rl.py end to end in one process: parameters change, completions are valid SIDs, resume works,
bad input fails early with one line. Knobs shrunk for 2 shared CPU cores: G=4, 8 completions/step."""
import json
import math

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

import rl
from minionerec.data.formats import load_split, sid_string
from minionerec.data.prompts import Prompts
from minionerec.ranking.callback import metric_sums
from minionerec.data.rl_tasks import build_rl_dataset, item_description
from minionerec.model.tiny import build_tiny_model


def rl_args(demo_data, model_dir, output_dir, **overrides) -> rl.Args:
    base = dict(
        model_path=str(model_dir), output_dir=str(output_dir),
        train_file=str(demo_data / "train" / "Demo.csv"), eval_file=str(demo_data / "valid" / "Demo.csv"),
        info_file=str(demo_data / "info" / "Demo.txt"),
        sid_index_path=str(demo_data / "index" / "Demo.index.json"),
        item_meta_path=str(demo_data / "index" / "Demo.item.json"),
        batch_size=8, micro_batch_size=8, num_generations=4, max_steps=2, save_steps=1, learning_rate=1e-2,
        title_history_sample=50,
    )
    return rl.Args(**{**base, **overrides})


@pytest.fixture(scope="module")
def two_step_run(demo_data, tiny_model_dir, tmp_path_factory):
    """add_gt guarantees a hit in every group, so the rule reward has variance and gradients flow."""
    out = tmp_path_factory.mktemp("rl_run")
    trainer = rl.main(rl_args(demo_data, tiny_model_dir, out, add_gt=True, reward_type="ranking", beta=0.04,
                              rank_eval_on_valid=True, rank_eval_every=1, rank_eval_beams=5, eval_sample=8))
    return trainer, out


def test_two_steps_change_parameters_and_log_valid_sids(two_step_run, demo_data, tiny_model_dir):
    trainer, out = two_step_run
    assert trainer.state.global_step == 2
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "final_checkpoint").state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter moved in two RL steps"
    sids = {sid_string(s) for s in json.loads((demo_data / "index" / "Demo.index.json").read_text()).values()}
    for step in (1, 2):
        logged = pd.read_parquet(out / "completions" / f"completions_{step:05d}.parquet")
        assert len(logged) == 8 and all(c.strip() in sids for c in logged["completion"])
        assert logged["rule"].sum() == 2  # add_gt: exactly one hit per group of 4
    history = [h for h in trainer.state.log_history if "reward" in h]
    assert [h["step"] for h in history] == [1, 2] and all(h["kl"] >= 0 for h in history)
    assert all(h["time/generation_s"] > 0 and h["time/scoring_reference_s"] > 0 for h in history)
    assert all("eval_HR@5" in h and 0 <= h["eval_NDCG@5"] <= h["eval_HR@5"] <= 1 for h in history)
    for h in history:  # the rollout diagnostics, every step (of the policy's own beams: before add_gt's insertion)
        assert 0 <= h["rollout/frac_groups_zero_std"] <= 1 and 0 <= h["rollout/target_hit_rate"] <= 1
        assert 1 >= h["rollout/prefix_match_l1"] >= h["rollout/prefix_match_l2"] >= h["rollout/prefix_match_l3"] >= 0
        assert h["rollout/target_mean_rank"] is None or 1 <= h["rollout/target_mean_rank"] <= 4
    assert (out / "final_checkpoint" / "tokenizer.json").is_file()


def test_resume_continues_at_the_saved_step(two_step_run, demo_data, tiny_model_dir, tmp_path):
    _, first = two_step_run
    trainer = rl.main(rl_args(demo_data, tiny_model_dir, tmp_path, add_gt=True,
                              resume_from_checkpoint=str(first / "checkpoint-1")))
    assert trainer.state.global_step == 2
    # only step 2 was generated in this run: step 1 came from the checkpoint
    assert sorted(p.name for p in (tmp_path / "completions").iterdir()) == ["completions_00002.parquet"]


def test_rl_dataset_tasks(demo_data):
    sid_index = json.loads((demo_data / "index" / "Demo.index.json").read_text())
    meta = json.loads((demo_data / "index" / "Demo.item.json").read_text())
    train = load_split(demo_data / "train" / "Demo.csv")
    ds = build_rl_dataset(train, sid_index, meta, title_history_sample=30, seed=0, prompts=Prompts("minionerec"))
    counts = pd.Series(ds["task"]).value_counts().to_dict()
    assert counts == {"sid_history": len(train), "title2sid": len(sid_index), "title_history": 30}
    # upstream's RLTitle2SidDataset adds description -> SID: one row per distinct non-empty description
    upstream = pd.Series(build_rl_dataset(train, sid_index, meta, 30, 0)["task"]).value_counts().to_dict()
    descriptions = {item_description(m) for i, m in meta.items() if i in sid_index and item_description(m).strip()}
    assert upstream == {**counts, "description2sid": len(descriptions)}
    row = next(r for r in ds if r["task"] == "title2sid")
    assert row["history_item_id"] == [] and row["target"] == sid_string(sid_index[row["item_id"]])
    assert row["prompt"].endswith("### Response:\n")
    sampled = build_rl_dataset(train, sid_index, meta, 30, 0, sample_train=True, prompts=Prompts("minionerec"))
    assert len(sampled) == len(ds) - int(0.2 * len(ds))
    only_history = build_rl_dataset(train, sid_index, meta, 0, 0, title2sid=False)
    assert set(only_history["task"]) == {"sid_history"} and len(only_history) == len(train)


def test_eval_metric_sums_hand_computed():
    # targets at ranks 1, 0 and absent -> HR@1 1 hit, HR@3 2 hits; NDCG@3 = 1/log2(3) + 1
    sums = metric_sums([["a", "b", "c"], ["c", "a", "b"], ["x", "y", "z"]], ["b", "c", "b"], ks=(1, 3))
    assert sums == pytest.approx({"HR@1": 1.0, "HR@3": 2.0, "NDCG@1": 1.0, "NDCG@3": 1 + 1 / math.log2(3)})
    assert metric_sums([], [], ks=(1,)) == {"HR@1": 0.0, "NDCG@1": 0.0}  # a process without rows


@pytest.mark.parametrize("overrides, message", [
    (dict(num_generations=3), r"--batch_size 8 must be a multiple of --num_generations 3 x 1 processes"),
    (dict(dapo=True, gspo=True), r"--dapo and --gspo are exclusive"),
    (dict(reward_type="ndcg"), r"unknown reward_type 'ndcg'; valid: rule, ranking"),
    (dict(reward_type="rule+prefix", prefix_reward_weights="0.5,1.0"),
     r"^error: --prefix_reward_weights needs 3 number\(s\), one per SID level of the index, got '0.5,1.0'$"),
    (dict(num_generations=1, batch_size=1, micro_batch_size=1), r"--num_generations must be >= 2"),
    (dict(model_path="/nonexistent"), r"--model_path must be a local model directory"),
    (dict(rank_eval_on_valid=True, eval_file=""), r"--rank_eval_on_valid needs --eval_file"),
    (dict(sync_ref_model=True, beta=0.0), r"--sync_ref_model needs --beta > 0"),
    (dict(dynamic_sampling=True), r"--dynamic_sampling applies to sampled rollouts; add --beam_search false"),
    (dict(keep_best=True), r"--keep_best needs --rank_eval_on_valid true"),
    (dict(keep_best=True, rank_eval_on_valid=True, lora_r=4), r"--keep_best does not combine with --lora_r yet"),
])
def test_bad_flags_fail_before_loading(demo_data, tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(SystemExit, match=message):
        rl.main(rl_args(demo_data, tiny_model_dir, tmp_path, **overrides))


@pytest.fixture(scope="module")
def dropout_model_dir(demo_data, tmp_path_factory):
    """conftest's tiny model with attention dropout 0.5 and init std 0.2: its logits are peaked enough that dropout
    moves the log-probs far above float rounding (at init 0.02 and dropout 0.1 the KL was ~4e-6)."""
    return build_tiny_model(tmp_path_factory.mktemp("dropout_model"), demo_data / "index" / "Demo.index.json",
                            demo_data / "index" / "Demo.item.json", hidden_size=32, num_layers=1, num_heads=2,
                            num_kv_heads=1, intermediate_size=64, vocab_size=600, seed=0, attention_dropout=0.5,
                            initializer_range=0.2)


def dropout_rates(model) -> set[float]:
    """Every dropout probability in `model`: nn.Dropout modules (LoRA's) and float attributes (Qwen2's attention)."""
    rates = set()
    for module in model.modules():
        rates |= {module.p} if isinstance(module, torch.nn.Dropout) else set()
        rates |= {v for name, v in vars(module).items() if "dropout" in name and isinstance(v, float)}
    return rates


@pytest.mark.parametrize("lora_r", [0, 4])  # 0: a separate reference model; 4: the policy with adapters disabled
def test_step_one_kl_is_zero_without_dropout(demo_data, dropout_model_dir, tmp_path, lora_r):
    """Step 1's KL is measured before its optimizer update (one pass, no accumulation), so the policy is the
    reference whatever the learning rate: any KL there is dropout noise in the rollout scoring or the reference."""
    kl = {}
    for disable in (True, False):  # False: what rl.py did before --disable_dropout (TRL's default)
        # stop_after_step: the run ends before final_checkpoint merges (and so removes) the LoRA adapters
        trainer = rl.main(rl_args(demo_data, dropout_model_dir, tmp_path / str(disable), max_steps=2,
                                  stop_after_step=1, beta=0.04, lora_r=lora_r, lora_dropout=0.1,
                                  disable_dropout=disable, save_steps=100, gradient_checkpointing=False))
        kl[disable] = trainer.state.log_history[0]["kl"]
        models = [m for m in (trainer.model, trainer.ref_model) if m is not None]
        assert len(models) == (1 if lora_r else 2)
        # attention dropout in every layer of both models, LoRA's dropout on each adapted linear
        on = {0.5, 0.1} if lora_r else {0.5}
        assert [dropout_rates(m) for m in models] == [{0.0} if disable else on] * len(models)
    assert kl[True] < 1e-6, kl
    assert kl[False] > 1e-2, kl  # with dropout on (~0.3-0.6 here) the flag matters


def test_model_without_sid_tokens_is_rejected(demo_data, tmp_path):
    # a base model built for another catalogue: its vocabulary has <x_...> tokens, not the demo's SIDs
    other = {k: [t.replace("<", "<x") for t in v] for k, v in
             json.loads((demo_data / "index" / "Demo.index.json").read_text()).items()}
    (tmp_path / "other.index.json").write_text(json.dumps(other))
    model_dir = build_tiny_model(tmp_path / "m", tmp_path / "other.index.json", demo_data / "index" / "Demo.item.json",
                                 hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                 vocab_size=300)
    with pytest.raises(SystemExit, match=r"lacks \d+ SID token\(s\) \(e\.g\. <a_\d+>\); RL starts from an SFT"):
        rl.main(rl_args(demo_data, model_dir, tmp_path / "out"))


def _guarded_run(demo_data, model_dir, out, monkeypatch, scores):
    """rl.py --keep_best with the valid evaluation scripted: `scores` are NDCG@5 at steps 0, 1, 2, ..."""
    from minionerec.ranking.callback import ConstrainedEvalCallback

    values = iter(scores)
    monkeypatch.setattr(ConstrainedEvalCallback, "evaluate", lambda self: {"eval_NDCG@5": next(values)})
    trainer = rl.main(rl_args(demo_data, model_dir, out, add_gt=True, rank_eval_on_valid=True, rank_eval_every=1,
                              rank_eval_beams=5, eval_sample=4, keep_best=True, save_steps=100,
                              max_steps=len(scores) - 1))
    return trainer, json.loads((out / "guard.json").read_text())


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_guard_keeps_the_sft_weights_when_rl_lowers_valid(demo_data, tiny_model_dir, tmp_path, monkeypatch):
    _, guard = _guarded_run(demo_data, tiny_model_dir, tmp_path, monkeypatch, [0.30, 0.20, 0.25])
    assert (guard["chosen_step"], guard["start"], guard["chosen"]) == (0, 0.30, 0.30)
    assert [c["step"] for c in guard["curve"]] == [0, 1, 2]
    sft, final = _weights(tiny_model_dir), _weights(tmp_path / "final_checkpoint")
    assert all(torch.equal(sft[k], final[k]) for k in sft)  # bit for bit the SFT model
    assert not (tmp_path / "best_checkpoint").exists()


def test_guard_keeps_the_best_rl_step(demo_data, tiny_model_dir, tmp_path, monkeypatch):
    # step 1 runs at the warm-up's learning rate 0, so step 2 is the first whose weights differ from SFT's
    trainer, guard = _guarded_run(demo_data, tiny_model_dir, tmp_path, monkeypatch, [0.20, 0.25, 0.30, 0.26])
    assert guard["chosen_step"] == 2 and trainer.state.global_step == 3
    sft, final = _weights(tiny_model_dir), _weights(tmp_path / "final_checkpoint")
    last = trainer.model.state_dict()
    assert any(not torch.equal(sft[k], final[k]) for k in sft)  # RL moved it...
    assert any(not torch.equal(last[k].cpu(), final[k]) for k in final if k in last)  # ...and step 3 is not kept
    assert (tmp_path / "final_checkpoint" / "tokenizer.json").is_file()


def test_checkpointing_toggles_leave_one_input_grads_hook(two_step_run):
    """TRL switches activation checkpointing off and on around every rollout and scoring pass, and the ranking
    evaluation around each call; transformers added an input-embedding hook at each switch-on (1 -> 6 after 5)."""
    trainer, _ = two_step_run
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.args.gradient_checkpointing
    assert len(model.get_input_embeddings()._forward_hooks) == 1
    for _ in range(5):
        model.gradient_checkpointing_disable()
        model.gradient_checkpointing_enable()
    assert len(model.get_input_embeddings()._forward_hooks) == 1


def test_sample_bounds_each_prompt_task_and_the_eval_rows(demo_data, tiny_model_dir, tmp_path):
    args = rl_args(demo_data, tiny_model_dir, tmp_path, sample=6, rank_eval_on_valid=True)
    train, valid = rl.load_datasets(args, json.loads((demo_data / "index" / "Demo.index.json").read_text()))
    assert len(valid) == 6
    assert sorted(set(train["task"])) == ["description2sid", "sid_history", "title2sid", "title_history"]
    assert all(list(train["task"]).count(t) == 6 for t in set(train["task"]))


@pytest.mark.parametrize("old", ["train_batch_size", "gradient_accumulation_steps"])
def test_per_process_batch_keys_of_old_recipes_are_one_line(old, tmp_path):
    """A recipe means the same run on any cluster: rl.py's batch is global now, and the old per-process keys (which
    doubled the completions a step on 16 GPUs) are refused with their translation, never reinterpreted."""
    from minionerec.run.recipe import ConfigError, resolve_args

    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"rl:\n  {old}: 64\n")
    with pytest.raises(ConfigError, match=rf"old\.yaml: rl: {old} was per process; rl.py's batch is global now, as "
                                          r"sft.py's: write batch_size = completions per optimizer step"):
        resolve_args(rl.Args, {"recipe": str(recipe)})
    with pytest.raises(ValueError, match=rf"^--{old} was per process"):
        resolve_args(rl.Args, {old: 64})
