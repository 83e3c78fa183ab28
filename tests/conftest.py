"""Shared fixtures: a small generated dataset and a tiny Qwen2 model built on it (never downloaded)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # importable through pytest.ini's pythonpath (or pip install -e .)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
# sft.py's prepared rows (--data_cache_dir auto) go to a directory of this test session, not ~/.cache
os.environ.setdefault("MINIONEREC_CACHE", tempfile.mkdtemp(prefix="minionerec-test-cache-"))

from minionerec.prep.make_demo_data import make_demo_data  # noqa: E402  (after the environment defaults)
from minionerec.run.topology import find_free_port as free_port  # noqa: E402, F401  (the tests import it from here)
from minionerec.model.tiny import build_tiny_model  # noqa: E402

CATEGORY = "Demo"


@pytest.fixture(scope="session")
def demo_category() -> str:
    return CATEGORY


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """80 items, ~120 users: shrunk from the demo's 320 x 600 so fixtures build in ~2 s."""
    out = tmp_path_factory.mktemp("demo_data")
    make_demo_data(out, category=CATEGORY, items_per_family=10, num_users=120, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(demo_data, tmp_path_factory) -> Path:
    """hidden 32, 1 layer, 600-token BPE: the smallest Qwen2 that still exercises every code path."""
    out = tmp_path_factory.mktemp("tiny_model")
    return build_tiny_model(out, demo_data / "index" / f"{CATEGORY}.index.json",
                            demo_data / "index" / f"{CATEGORY}.item.json",
                            hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                            vocab_size=600, seed=0)


def split_path(data_dir: Path, split: str) -> Path:
    return data_dir / split / f"{CATEGORY}.csv"




def three_row_split(path: Path, index: dict, meta: dict):
    """Three MiniOneRec rows over items 1..3 (user u1: 1 -> 2, 1,2 -> 3; user u2: 3 -> 1), through the CSV
    round trip (write_split -> load_split) that sft.py / rl.py / evaluate.py read."""
    import pandas as pd

    from minionerec.data.formats import load_split, write_split

    sid = {k: "".join(v) for k, v in index.items()}
    rows = [("u1", ["1"], "2"), ("u1", ["1", "2"], "3"), ("u2", ["3"], "1")]
    df = pd.DataFrame([{
        "user_id": u, "history_item_title": [meta[h]["title"] for h in hist], "item_title": meta[t]["title"],
        "history_item_id": hist, "item_id": t, "history_item_sid": [sid[h] for h in hist], "item_sid": sid[t],
    } for u, hist, t in rows])
    write_split(df, path)
    return load_split(path, index, meta)


def base_without_sids(demo_data: Path, out: Path, tied: bool) -> int:
    """A hidden-32 Qwen2 base whose tokenizer lacks the SID tokens (as a real Qwen checkpoint does), seeded;
    returns its vocabulary size."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from minionerec.data.formats import load_item_meta
    from minionerec.model.tiny import build_tokenizer

    tokenizer = build_tokenizer(load_item_meta(demo_data / "index" / f"{CATEGORY}.item.json"), [], vocab_size=600)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                 tie_word_embeddings=tied)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return len(tokenizer)


def weights(path) -> dict:
    """name -> tensor of a saved checkpoint's model.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def run_cli(*cmd, **env):
    """Run a command from the repository root with one thread; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def sft_args(data_dir, model_dir, out, **overrides):
    """sft.Args for a two-step run on the demo data (parsed like command-line flags)."""
    import sft
    from minionerec.run.flags import parse_args

    base = dict(base_model=str(model_dir), train_file=str(split_path(data_dir, "train")),
                eval_file=str(split_path(data_dir, "valid")), output_dir=str(out),
                sid_index_path=str(data_dir / "index" / f"{CATEGORY}.index.json"),
                item_meta_path=str(data_dir / "index" / f"{CATEGORY}.item.json"),
                # shrunk: 8 rows, one full batch per step, so step 2 sees the same data as step 1
                sample=8, batch_size=8, micro_batch_size=8, max_steps=2, learning_rate=1e-2, warmup_steps=0,
                task_item_alignment=False, task_sid_history_title=False, logging_steps=1, eval_steps=1000,
                save_steps=1000)
    base.update(overrides)
    return parse_args(sft.Args, base)


def write(path: Path, text: str) -> str:
    """Write `text` to `path`; returns the path as a string (a flag value)."""
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="session")
def paths(demo_data, demo_category, tiny_model_dir):
    """recommend.py / serve.py's model and catalogue flags for the tiny model and the demo data."""
    return {"base_model": str(tiny_model_dir),
            "sid_index_path": str(demo_data / "index" / f"{demo_category}.index.json"),
            "item_meta_path": str(demo_data / "index" / f"{demo_category}.item.json")}
