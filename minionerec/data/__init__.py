"""Data as the models see it: the MiniOneRec file formats, prompt texts, SFT task rows + their batches,
RL prompt datasets. May import minionerec.run."""
