"""sft.py end to end on CPU: learning happens, train_only_new_tokens is exact, torchrun works, bad flags fail early."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sft
from conftest import CATEGORY, base_without_sids, sft_args, split_path, weights
from minionerec.run import preflight
from minionerec.run.flags import FlagError, parse_args
from minionerec.data.formats import DataError
from minionerec.model.loading import load_tokenizer


def test_two_steps_loss_falls_and_parameters_change(demo_data, tiny_model_dir, tmp_path):
    trainer = sft.main(sft_args(demo_data, tiny_model_dir, tmp_path))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and losses[1] < losses[0]
    before, after = weights(tiny_model_dir), weights(tmp_path / "final_checkpoint")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final_checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final_checkpoint")
    assert reloaded.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_freeze_llm_trains_only_new_sid_rows(demo_data, tmp_path):
    """A base model without SID tokens: sft.py adds them, and only their rows may change."""
    base = tmp_path / "base"
    n_old = base_without_sids(demo_data, base, tied=True)
    sft.main(sft_args(demo_data, base, tmp_path / "out", train_only_new_tokens=True, learning_rate=1e-1))
    before, after = weights(base), weights(tmp_path / "out" / "final_checkpoint")
    embed = "model.embed_tokens.weight"
    assert after[embed].shape[0] > n_old  # SID rows were added
    assert torch.equal(before[embed], after[embed][:n_old])  # old rows untouched, bit for bit
    for name in before:
        if name != embed:
            assert torch.equal(before[name], after[name]), name
    new_rows = after[embed][n_old:]
    assert new_rows.std(dim=0).abs().sum() > 0  # new rows moved apart from their shared init


def test_bad_csv_fails_before_training_and_writes_nothing(demo_data, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(split_path(demo_data, "train").read_text().replace("<a_", "<zz_", 1))
    with pytest.raises(DataError, match=r"bad\.csv: row 2: SID .* is not in the SID index"):
        sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "out", train_file=str(bad)))
    assert not (tmp_path / "out").exists()


def test_flag_errors():
    with pytest.raises(FlagError, match=r"unknown flag\(s\): --lerning_rate"):
        parse_args(sft.Args, {"lerning_rate": 1})
    with pytest.raises(FlagError, match="--train_only_new_tokens: expected true/false, got 'maybe'"):
        parse_args(sft.Args, {"train_only_new_tokens": "maybe"})
    assert parse_args(sft.Args, {"train_only_new_tokens": "false"}).train_only_new_tokens is False
    assert parse_args(sft.Args, {"train_only_new_tokens": "True"}).train_only_new_tokens is True
    with pytest.raises(FlagError, match="--batch_size: expected int, got '1.5'"):
        parse_args(sft.Args, {"batch_size": "1.5"})
    with pytest.raises(SystemExit, match="--batch_size 10 is not divisible by --micro_batch_size 4 x 2 processes"):
        preflight.gradient_accumulation(10, 4, 2)
    assert preflight.gradient_accumulation(32, 4, 2) == 4


def test_deepspeed_takes_a_json_and_refuses_a_deepspeed_yaml(tmp_path):
    # a YAML must be an accelerate launch config (its deepspeed_config_file is followed, tests/test_recipe.py)
    (tmp_path / "ds.yaml").write_text("zero_optimization:\n  stage: 2\n")
    with pytest.raises(SystemExit, match="ds.yaml: unknown accelerate key 'zero_optimization'"):
        sft.deepspeed_config(str(tmp_path / "ds.yaml"))
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    assert sft.deepspeed_config(str(tmp_path / "ds.json")) == str(tmp_path / "ds.json")
    with pytest.raises(SystemExit, match="DeepSpeed config not found: nope.json"):
        sft.deepspeed_config("nope.json")
    assert sft.deepspeed_config("") is None


def test_ranking_curve_matches_evaluate(demo_data, tiny_model_dir, tmp_path):
    """--rank_eval_on_valid logs valid HR/NDCG@K by constrained beam search at each eval step; the last
    point is the final model's, so it must equal evaluate.py's score of final_checkpoint on the same rows."""
    import json

    import evaluate

    valid = tmp_path / "valid8.csv"
    lines = split_path(demo_data, "valid").read_text().splitlines()
    valid.write_text("\n".join(lines[:9]) + "\n")  # header + 8 rows
    trainer = sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "out", eval_file=str(valid),
                                rank_eval_on_valid=True, rank_eval_every=1, rank_eval_beams=5, eval_sample=-1))
    curve = [json.loads(line) for line in (tmp_path / "out" / "eval_during_training.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [1, 2]
    assert [h["step"] for h in trainer.state.log_history if "eval_NDCG@5" in h] == [1, 2]  # in trainer_state too
    rows = evaluate.main(evaluate.Args(base_model=str(tmp_path / "out" / "final_checkpoint"), test_file=str(valid),
                                       sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"),
                                       result_json=str(tmp_path / "pred.json"), num_beams=5, dtype="float32"))
    reference = rows["constrained beam search"]
    for k in (1, 3, 5):
        assert curve[-1][f"eval_NDCG@{k}"] == pytest.approx(reference[f"NDCG@{k}"])
        assert curve[-1][f"eval_HR@{k}"] == pytest.approx(reference[f"HR@{k}"])


def test_ranking_curve_needs_eval_file(demo_data, tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="--rank_eval_on_valid needs --eval_file"):
        sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "out", eval_file="", rank_eval_on_valid=True))
    assert not (tmp_path / "out").exists()


def test_keep_best_keeps_the_best_evaluated_step(demo_data, tiny_model_dir, tmp_path, monkeypatch):
    """Early stopping on the ranking curve: scripted NDCG@5 at steps 1, 2, 3 peaks at step 2, so
    final_checkpoint holds step 2's weights, not step 3's; guard.json records the choice."""
    import json

    from minionerec.ranking.callback import ConstrainedEvalCallback

    values = iter([0.20, 0.30, 0.25])
    monkeypatch.setattr(ConstrainedEvalCallback, "evaluate", lambda self: {"eval_NDCG@5": next(values)})
    trainer = sft.main(sft_args(demo_data, tiny_model_dir, tmp_path, max_steps=3, rank_eval_on_valid=True,
                                rank_eval_every=1, rank_eval_beams=5, keep_best=True))
    guard = json.loads((tmp_path / "guard.json").read_text())
    assert (guard["chosen_step"], guard["chosen"], guard["start"]) == (2, 0.30, None)
    final, base = weights(tmp_path / "final_checkpoint"), weights(tiny_model_dir)
    last = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    assert any(not torch.equal(base[k], final[k]) for k in base)  # trained...
    assert any(not torch.equal(last[k], final[k]) for k in final if k in last)  # ...but not the last step
    assert not (tmp_path / "best_checkpoint").exists()  # moved onto final_checkpoint
    AutoTokenizer.from_pretrained(tmp_path / "final_checkpoint")


def test_keep_best_needs_the_ranking_curve(demo_data, tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="--keep_best needs --rank_eval_on_valid true"):
        sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "out", keep_best=True))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(lr_scheduler_type="cosine_annealing"), r"--lr_scheduler_type 'cosine_annealing' is not a transformers schedule"),
    (dict(weight_decay=0.1, train_only_new_tokens=True), r"--weight_decay must be >= 0, and 0 with --train_only_new_tokens"),
])
def test_optimiser_flag_errors(demo_data, tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(SystemExit, match=message):
        sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "out", **overrides))
    assert not (tmp_path / "out").exists()


def test_resume_past_save_total_limit_finishes(demo_data, tiny_model_dir, tmp_path):
    """A resumed run that saves more checkpoints than save_total_limit rotates away the one it resumed from;
    its summary used to re-read that checkpoint after training and die with FileNotFoundError (issue 22, item 1)."""
    sft.main(sft_args(demo_data, tiny_model_dir, tmp_path, max_steps=4, save_steps=2))
    trainer = sft.main(sft_args(demo_data, tiny_model_dir, tmp_path, max_steps=10, save_steps=2,
                                resume_from_checkpoint="true"))
    assert trainer.state.global_step == 10
    assert not (tmp_path / "checkpoint-4").exists()  # rotated away (save_total_limit 2), and the run still finished
    assert (tmp_path / "final_checkpoint" / "model.safetensors").is_file()


def test_stop_after_step_then_resume_equals_the_uninterrupted_run(demo_data, tiny_model_dir, tmp_path, monkeypatch):
    """--stop_after_step 2 ends with checkpoint-2 and no final_checkpoint; the resume restores the ranking curve and
    keep_best's choice (scripted NDCG@5 peaks at step 2, before the stop), so the final weights equal an
    uninterrupted run's (the rehearsal's kill-free resume; jobs under a scheduler's time limit)."""
    import json

    from minionerec.ranking.callback import ConstrainedEvalCallback

    scores = {1: 0.20, 2: 0.30, 3: 0.25, 4: 0.22}
    monkeypatch.setattr(ConstrainedEvalCallback, "evaluate",
                        lambda self: {"eval_NDCG@5": scores[self.trainer.state.global_step]})
    flags = dict(max_steps=4, rank_eval_on_valid=True, rank_eval_every=1, rank_eval_beams=5, keep_best=True)
    sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "whole", **flags))
    sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "cut", stop_after_step=2, **flags))
    assert (tmp_path / "cut" / "checkpoint-2").is_dir() and not (tmp_path / "cut" / "final_checkpoint").exists()
    sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "cut", resume_from_checkpoint="true", **flags))
    curves = [[json.loads(line)["step"] for line in (tmp_path / run / "eval_during_training.jsonl").read_text().splitlines()]
              for run in ("whole", "cut")]
    assert curves == [[1, 2, 3, 4], [1, 2, 3, 4]]
    guards = [json.loads((tmp_path / run / "guard.json").read_text())["chosen_step"] for run in ("whole", "cut")]
    assert guards == [2, 2]
    whole, cut = weights(tmp_path / "whole" / "final_checkpoint"), weights(tmp_path / "cut" / "final_checkpoint")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert not (tmp_path / "cut" / "final_checkpoint" / "best_step.txt").exists()


def test_stop_after_step_must_come_before_the_last(demo_data, tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match=r"--stop_after_step must be 0 \(off\) or a step before --max_steps 2, got 2"):
        sft.main(sft_args(demo_data, tiny_model_dir, tmp_path / "out", stop_after_step=2))
    assert not (tmp_path / "out").exists()


def test_sample_bounds_every_task_and_the_eval_rows(demo_data, tiny_model_dir, tmp_path, capsys):
    """Upstream passes `sample` to every dataset: the catalogue's alignment task and the eval set included (a first
    `--sample 64` run once trained on the whole catalogue and scored the whole valid split every 5%)."""
    from minionerec.data.sft_tasks import TASKS

    args = sft_args(demo_data, tiny_model_dir, tmp_path, sample=5, dry_run=True, task_item_alignment=True,
                    task_sid_history_title=True, batch_size=8, micro_batch_size=8, num_epochs=1, max_steps=-1)
    data = sft.load_data(args, list(TASKS), load_tokenizer(tiny_model_dir))
    assert len(data.eval) == 5 and len(data.train) == 5 * len(TASKS)
    sft.main(args)
    assert "25 rows -> 4 steps per epoch, 4 steps in all" in capsys.readouterr().out
