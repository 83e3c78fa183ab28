"""ZeRO-3 with two processes (accelerate launch, CPU, gloo): the ranking curve on uneven eval rows."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import CATEGORY, ROOT, free_port, weights


@pytest.mark.slow
@pytest.mark.parametrize("keep_best", [True])  # the guard also scores step 0: the uneven rows at every evaluation
def test_zero3_two_processes_uneven_eval_rows(demo_data, tiny_model_dir, tmp_path, keep_best):
    """ZeRO-3 (CPU, gloo): 9 eval rows, batch 4 -> rank 0 has 2 batches, rank 1 one; without the
    dummy batches the collective generate calls mismatch and gloo aborts. With keep_best the
    regression guard's collective saves run too (step 0 is evaluated, best_checkpoint saved by all ranks)."""
    out = tmp_path / "run"
    env = {
        **os.environ,
        "ACCELERATE": str(Path(sys.executable).parent / "accelerate"),
        "CONFIG": "config/zero3_cpu.yaml", "NUM_PROCESSES": "2", "PORT": str(free_port()), "RECIPE": "recipes/demo.yaml",
        "DATA_DIR": str(demo_data), "CATEGORY": CATEGORY, "MODEL_PATH": str(tiny_model_dir), "OUTPUT_DIR": str(out),
        "OMP_NUM_THREADS": "1",
    }
    # shrunk: one group of G=4 per process and step, 2 steps, evaluation after each
    shrunk = {"batch_size": 8, "micro_batch_size": 4, "num_generations": 4, "max_steps": 2,
              "save_steps": 100, "title_history_sample": 50, "rank_eval_on_valid": "true", "rank_eval_beams": 4,
              "eval_sample": 9, "eval_batch_size": 4, "rank_eval_every": 1, "add_gt": "true", "keep_best": str(keep_best).lower()}
    flags = [part for k, v in shrunk.items() for part in (f"--{k}", str(v))]
    result = subprocess.run(["bash", "rl.sh", *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "world_size=2 distributed=DistributedType.DEEPSPEED" in result.stdout
    assert "[rl] done: steps=2" in result.stdout
    evals = [json.loads(line) for line in (out / "eval_during_training.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 1, 2][not keep_best:] and all(0 <= e["eval_HR@3"] <= 1 for e in evals)
    if keep_best:
        guard = json.loads((out / "guard.json").read_text())
        best = max(evals, key=lambda e: e[guard["metric"]])  # the first of equal maxima, as the guard keeps
        assert guard["chosen_step"] == best["step"]
        assert "[rl] keep_best: valid eval_NDCG@3 at step 0 (the starting weights)" in result.stdout
        AutoModelForCausalLM.from_pretrained(out / "final_checkpoint")
        return
    before, after = weights(tiny_model_dir), weights(out / "final_checkpoint")
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight moved under ZeRO-3"
