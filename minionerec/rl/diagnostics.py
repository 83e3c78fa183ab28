"""What the rollouts of an RL step hold, logged every step by MiniOneRecGRPOTrainer (trainer_state.json's log_history):
whether a group's own rollouts found its target and at which rank, how many leading SID levels they share with it,
and how many groups carry no learning signal (equal rewards: zero advantage).

Every figure is a mean over groups (a prompt and its num_generations rollouts) of all processes: each process keeps
one row per local group (group_stats), the trainer gathers the rows, and summarise averages them, so the numbers do not
depend on how the groups were split over processes.
"""
from __future__ import annotations

import torch

from minionerec.data.formats import split_sid
from minionerec.rl.rewards import completion_sid, shared_levels


def group_stats(completions: list[str], targets: list[str], num_generations: int) -> torch.Tensor:
    """completions: SIDs, num_generations consecutive ones per group in rollout (beam) order; targets: one SID per
    group -> [groups, 2 + levels] rows [hit, rank, match_l1, ..., match_lL]: hit 1 when the group holds its target,
    rank its 1-based position there (0 without a hit), match_lk the fraction of the group whose first k levels are
    the target's."""
    G = num_generations
    if len(completions) != G * len(targets):
        raise ValueError(f"group_stats: {len(completions)} completions for {len(targets)} groups of {G}")
    levels = len(split_sid(completion_sid(targets[0]))) if targets else 0
    rows = []
    for g, target in enumerate(targets):
        shared = [shared_levels(c, target) for c in completions[g * G:(g + 1) * G]]  # [G]
        rank = next((r + 1 for r, k in enumerate(shared) if k == levels), 0)
        rows.append([float(rank > 0), float(rank)] + [sum(k >= level for k in shared) / G
                                                      for level in range(1, levels + 1)])
    return torch.tensor(rows, dtype=torch.float32).reshape(len(targets), 2 + levels)


def summarise(stats: torch.Tensor) -> dict[str, float]:
    """group_stats rows of every process's groups -> the logged means: rollout/target_hit_rate (over groups),
    rollout/target_mean_rank (over the groups holding their target; nan without one, which TRL's log skips) and
    rollout/prefix_match_l1..lL (over groups, equal-sized: the fraction of all rollouts)."""
    hit, rank = stats[:, 0], stats[:, 1]
    metrics = {"rollout/target_hit_rate": hit.mean().item(),
               "rollout/target_mean_rank": rank[hit > 0].mean().item() if hit.any() else float("nan")}
    for k in range(1, stats.shape[1] - 1):
        metrics[f"rollout/prefix_match_l{k}"] = stats[:, 1 + k].mean().item()
    return metrics


def frac_zero_std(rewards: torch.Tensor, num_generations: int) -> float:
    """rewards: [groups * G] weighted reward sums of every process, group by group -> the fraction of groups whose G
    rewards are all equal. TRL's frac_reward_zero_std is this under --scale_rewards group|none, but the batch's
    under --scale_rewards batch."""
    grouped = rewards.view(-1, num_generations)  # [groups, G]
    return torch.isclose(grouped, grouped[:, :1]).all(dim=1).float().mean().item()
