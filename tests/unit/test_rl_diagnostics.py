"""The rollout diagnostics RL logs every step, on hand-written groups; expected values computed by hand in comments."""
import math

import pytest
import torch

from minionerec.rl.diagnostics import frac_zero_std, group_stats, summarise

T, U = "<a_1><b_1><c_1>", "<a_2><b_2><c_2>"
# group 1 (target T): levels shared 1, 3 (the target, rank 2), 0; group 2 (target U): 2, 1, 0 (free text), no hit
GROUPS = ["<a_1><b_2><c_1>", T + "\n", "<a_2><b_1><c_1>",
          "<a_2><b_2><c_1>", "<a_2><b_1><c_2>", "not a SID"]


def test_group_stats_hand_computed():
    stats = group_stats(GROUPS, [T, U], num_generations=3)
    # [hit, rank, match_l1, match_l2, match_l3]
    torch.testing.assert_close(stats, torch.tensor([[1, 2, 2 / 3, 1 / 3, 1 / 3],
                                                    [0, 0, 2 / 3, 1 / 3, 0]]))
    with pytest.raises(ValueError, match="5 completions for 2 groups of 3"):
        group_stats(GROUPS[:5], [T, U], num_generations=3)


def test_summarise_averages_over_groups_whatever_the_process_split():
    expected = {"rollout/target_hit_rate": 0.5,  # 1 of 2 groups holds its target
                "rollout/target_mean_rank": 2.0,  # over the groups holding it: rank 2
                "rollout/prefix_match_l1": 2 / 3,  # (2/3 + 2/3) / 2
                "rollout/prefix_match_l2": 1 / 3,
                "rollout/prefix_match_l3": 1 / 6}  # (1/3 + 0) / 2
    assert summarise(group_stats(GROUPS, [T, U], 3)) == pytest.approx(expected)
    # two processes with one group each: the trainer gathers their rows (concatenated), then summarises
    gathered = torch.cat([group_stats(GROUPS[:3], [T], 3), group_stats(GROUPS[3:], [U], 3)])
    assert summarise(gathered) == pytest.approx(expected)


def test_mean_rank_is_nan_without_a_hit():
    # TRL's log drops nan values (None when a whole logging window has no hit)
    metrics = summarise(group_stats(GROUPS[3:], [U], 3))
    assert metrics["rollout/target_hit_rate"] == 0.0 and math.isnan(metrics["rollout/target_mean_rank"])


def test_frac_zero_std_counts_groups_with_equal_rewards():
    # groups of 3: all 1 (zero std), mixed, all 0.25 (zero std), mixed -> 2 of 4
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.25, 0.25, 0.25, 0.5, 0.2, 0.0])
    assert frac_zero_std(rewards, num_generations=3) == 0.5
