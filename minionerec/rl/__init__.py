"""GRPO: TRL's trainer with constrained SID rollouts (trainer) and the reward registry (rewards).
May import run, data, model and ranking."""
