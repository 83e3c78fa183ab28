"""Quality benchmark: does MiniOneRec beat SASRec, and does RL beat SFT? Every figure over several training seeds.

    python -m bench.quality --preset smoke|cpu|gpu|gpu_pretrained   # flags: --help

What it runs, scores and writes, and which file holds which job: docs/quality-bench.md.
"""
from bench.quality.plan import PRESETS, Args, resolve, script_args
from bench.quality.run import main

# the entry point as `python -m bench.quality` runs it, and each preset's resolved plan (which
# tests/integration/test_recipe.py checks against the recipes); everything else is imported from its own module
__all__ = ["Args", "main", "PRESETS", "resolve", "script_args"]
