"""Run an entry script and SIGKILL it at a chosen point of a Trainer checkpoint save (fault tests).

    python tests/fault_driver.py POINT STEP script.py --flag value ...

POINT, inside the save of checkpoint-STEP:
  empty_dir      the checkpoint directory exists, nothing in it yet
  weights_only   the weights are written; optimizer, RNG and trainer state are not
  torn_state     trainer_state.json is half written (the last file of a save)
A kill, not an exception: no finally block or atexit handler runs, exactly as with `kill -9`.
"""
import os
import runpy
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerState

point, step, script, *flags = sys.argv[1:]
step = int(step)


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def at_step(path) -> bool:
    return Path(path).name == f"checkpoint-{step}"


save_model, save_optimizer, save_json = (Trainer.save_model, Trainer._save_optimizer_and_scheduler,
                                        TrainerState.save_to_json)


def patched_save_model(self, output_dir=None, _internal_call=False):
    if point == "empty_dir" and output_dir and at_step(output_dir):
        os.makedirs(output_dir, exist_ok=True)
        die()
    return save_model(self, output_dir, _internal_call)


def patched_save_optimizer(self, output_dir):
    if point == "weights_only" and at_step(output_dir):
        die()
    return save_optimizer(self, output_dir)


def patched_save_json(self, json_path):
    if point == "torn_state" and at_step(Path(json_path).parent):
        save_json(self, json_path)
        text = Path(json_path).read_text()
        Path(json_path).write_text(text[: len(text) // 2])
        die()
    return save_json(self, json_path)


Trainer.save_model, Trainer._save_optimizer_and_scheduler = patched_save_model, patched_save_optimizer
TrainerState.save_to_json = patched_save_json
sys.argv = [script, *flags]
runpy.run_path(script, run_name="__main__")
