"""sft.py --torch_compile: the compiled model trains the same steps as the eager one (losses equal to float noise),
padded and packed."""
import pytest

import sft
from conftest import sft_args


@pytest.mark.parametrize("packing", [False, True])
def test_compiled_steps_equal_eager(demo_data, tiny_model_dir, tmp_path, packing):
    losses = {}
    for compiled in (False, True):
        args = sft_args(demo_data, tiny_model_dir, tmp_path / f"c{compiled}", torch_compile=compiled, packing=packing,
                        max_steps=3, eval_file="")
        trainer = sft.main(args)
        losses[compiled] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)
