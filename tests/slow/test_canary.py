"""Quality canary (slow tier, CI runs it): a short deterministic SFT of the cpu preset's from-scratch model on real
Office_Products data keeps ranking well above the popularity collapse that the old init produced (issue 20).

The run: the cpu preset's tiny Qwen2 (recipes/quality_cpu.yaml, section tiny: hidden 128 x 2 layers and its
initializer_range; its attention dropout off) built with seed 0, SFT on the whole Office train split (SID history
-> next SID, minionerec prompts) for CANARY_STEPS steps of 64 rows at lr 3e-3 (cosine), 1 torch thread (CPU
results depend on the thread count), then constrained beam search with 20 beams on a fixed 500-row valid sample
(seed 42).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT

DATA = ROOT.parent / "shared" / "data" / "Amazon"
CATEGORY = "Office_Products"
CANARY_STEPS = 600
# Measured 2026-12-02 on the 2-core box (1 thread), preset init 0.03, no dropout: NDCG@10 0.0944, last train loss 1.691
# (init 0.044, the preset before: 0.0984, 1.66). The same run with the old init (initializer_range 0.02) is still
# collapsed onto popular items: NDCG@10 0.0294, loss 2.70. The floors sit between the two (0.070 = 26% below the
# measured NDCG, 0.51 above its loss): room for another CPU's float reductions, none for a return of the collapse.
CANARY_MEASURED = 0.0944
CANARY_FLOOR = 0.070
LOSS_CEILING = 2.2


def preset_model_knobs() -> dict:
    """The cpu preset's tiny-model flags (recipes/quality_cpu.yaml, section tiny)."""
    from minionerec.model.tiny import Args
    from minionerec.run.recipe import recipe_values

    return recipe_values(Args, str(ROOT / "recipes" / "quality_cpu.yaml"))


def canary_run(out: Path, **model_overrides) -> tuple[float, list[float]]:
    """Valid NDCG@10 of the canary run and its logged train losses."""
    import pandas as pd
    import torch

    import evaluate
    import sft
    from minionerec.data.formats import find_split
    from minionerec.model.tiny import build_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below: later tests in this process keep their threads
    index, meta = DATA / "index" / f"{CATEGORY}.index.json", DATA / "index" / f"{CATEGORY}.item.json"
    base = build_tiny_model(out / "base", index, meta, seed=0, **{**preset_model_knobs(), **model_overrides})
    trainer = sft.main(sft.Args(
        base_model=str(base), train_file=str(find_split(DATA, "train", CATEGORY)), output_dir=str(out / "sft"),
        sid_index_path=str(index), item_meta_path=str(meta), category=CATEGORY, seed=0, batch_size=64,
        micro_batch_size=64, max_steps=CANARY_STEPS, learning_rate=3e-3, warmup_steps=0.05, save_steps=10 ** 9,
        eval_steps=10 ** 9, logging_steps=25, prompt_style="minionerec", task_item_alignment=False,
        task_sid_history_title=False, task_title_history_title=False, task_title_history_sid=False))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    valid = out / "valid.csv"
    pd.read_csv(find_split(DATA, "valid", CATEGORY)).sample(n=500, random_state=42).sort_index().to_csv(valid, index=False)
    rows = evaluate.main(evaluate.Args(base_model=str(out / "sft" / "final_checkpoint"), test_file=str(valid),
                                       sid_index_path=str(index), result_json=str(out / "predictions.json"),
                                       num_beams=20, batch_size=16, dtype="float32", prompt_style="minionerec"))
    torch.set_num_threads(threads)
    return rows["constrained beam search"]["NDCG@10"], losses


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")
def test_canary_sft_ranks_above_the_floor(tmp_path):
    # The preset's attention dropout 0.1 slows the escape from popularity: at these 600 steps it scored 0.0485, too
    # near the collapse (0.0294) for a floor; the canary guards what the model sees and the init, so it runs without
    ndcg10, losses = canary_run(tmp_path, attention_dropout=0.0)
    print(f"canary: Office valid NDCG@10 {ndcg10:.4f}, last train loss {losses[-1]:.3f} after {CANARY_STEPS} steps "
          f"(floors {CANARY_FLOOR} / {LOSS_CEILING}; measured {CANARY_MEASURED})")
    assert losses[-1] < LOSS_CEILING, losses
    assert ndcg10 >= CANARY_FLOOR
