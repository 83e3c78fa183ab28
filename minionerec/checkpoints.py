"""Checkpoint policy shared by sft.py and rl.py: few checkpoints, and no full save at the last step.

A Trainer checkpoint holds the weights plus the optimizer state (Adam: ~16 bytes/parameter with
fp32 master weights, i.e. ~112 GB at 7B); `final_checkpoint` already holds the end-of-run weights.
"""
from __future__ import annotations

from transformers import TrainerCallback


class NoCheckpointAtLastStep(TrainerCallback):
    """Cancel the Trainer's save at the final step (transformers saves there whatever save_steps is):
    final_checkpoint, written right after training, is the one end-of-run copy."""

    def on_step_end(self, args, state, control, **kwargs):
        # load_best_model_at_end needs every evaluated step saved: leave that case to the Trainer
        if state.max_steps > 0 and state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False
        return control
