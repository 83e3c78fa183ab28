"""Upstream's module name for the trainer: a thin re-export of minionerec.rl.trainer."""
from minionerec.rl.trainer import (MiniOneRecGRPOConfig, MiniOneRecGRPOTrainer, grpo_loss_options,  # noqa: F401
                                     select_dynamic)
