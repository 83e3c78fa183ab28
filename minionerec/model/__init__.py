"""Models: loading a local checkpoint and adding the SID vocabulary, saving final_checkpoint at a run's end, LoRA,
the offline tiny Qwen2 builder, the short alignment fine-tune for new items. May import minionerec.run and
minionerec.data."""
