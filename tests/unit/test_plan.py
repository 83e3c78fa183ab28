"""minionerec.run.plan: the plan line every run prints (and the rehearsal reads back)."""
from minionerec.run.plan import parse, rl_plan, sft_plan


def test_sft_steps_follow_the_trainer_and_the_line_reads_back():
    # 1000 rows over 3 processes: 334 a process (padded), 21 micro-batches of 16, 3 optimizer steps of 8 (the last: 5)
    plan = sft_plan(rows=1000, micro=16, accumulation=8, world=3, epochs=2, max_steps=-1, lengths=[10, 30])
    assert (plan.steps_per_epoch, plan.total_steps, plan.global_batch) == (3, 6, 384)
    assert parse("noise\n" + plan.line() + "\n") == plan
    assert sft_plan(10, 4, 1, 1, 1, 7, [5]).total_steps == 7  # max_steps wins


def test_rl_plan_is_the_same_run_at_every_world_size():
    """A global batch: 64 completions (16 prompts x 4) a step, whatever the processes; TRL takes whole steps only."""
    plans = [rl_plan(prompts=100, micro=8, accumulation=8 // world, world=world, generations=4, iterations=1, epochs=1,
                     max_steps=-1, lengths=[3]) for world in (1, 2, 4)]
    assert {(p.global_batch, p.steps_per_epoch, p.total_steps) for p in plans} == {(64, 6, 6)}
    assert "global batch 64 completions (16 prompts x 4)" in plans[2].line() and parse(plans[2].line()) == plans[2]
