"""Peak host memory of loading a Qwen2.5-0.5B-shaped model for training, before vs after the
memory-lean loading (bf16 weights under DeepSpeed bf16 / LoRA, mean-only init of the new SID rows).

    python -m bench.load_memory [--model_dir DIR] [--sid_tokens 768] [--zero3]

Builds a random-weight model of the Qwen2.5-0.5B shape locally (hidden 896, 24 layers, 14 heads,
2 KV heads, FFN 4864, vocab 151,936, tied embeddings, saved in bf16 as Qwen ships it; no download),
then runs each loading recipe in its own child process, reads every weight once, and prints the
child's peak RSS (ru_maxrss from wait4). `--zero3` adds a 2-process ZeRO-3 (CPU, gloo) row: each rank's peak RSS
when the GRPOConfig with its DeepSpeed config is built before from_pretrained (zero.Init).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QWEN25_05B = dict(vocab_size=151_936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True)

# recipe -> (what it reproduces, weight dtype, vocabulary growth, models loaded: policy [+ reference])
RECIPES = {
    "imports": ("baseline: python + torch + transformers imported, no model", "float32", None, 0),
    "sft_before": ("sft.py before: fp32, mean_resizing (covariance)", "float32", "hf_mean_resizing", 1),
    "sft_after": ("sft.py, DeepSpeed bf16 or LoRA: bf16, mean rows, padded to 64", "bfloat16", "grow_vocabulary", 1),
    "rl_before": ("rl.py before: fp32 policy + fp32 reference (TRL copies the policy dtype)", "float32", None, 2),
    "rl_after": ("rl.py, DeepSpeed bf16: bf16 policy + bf16 reference", "bfloat16", None, 2),
    "rl_lora_after": ("rl.py with LoRA: bf16 policy, reference = adapters disabled", "bfloat16", None, 1),
}


def build_model(model_dir: Path, seed: int = 0) -> None:
    """Random weights of the Qwen2.5-0.5B shape, written with save_pretrained in bf16 (skipped if present)."""
    if (model_dir / "model.safetensors").is_file():
        return
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B, dtype="bfloat16")).to(torch.bfloat16)
    model.save_pretrained(model_dir)


def child(recipe: str, model_dir: str, sid_tokens: int) -> None:
    """Load as `recipe` does, in this (fresh) process; prints seconds taken."""
    import torch

    from minionerec.model.loading import grow_vocabulary, load_model

    _, dtype, growth, copies = RECIPES[recipe]
    start = time.perf_counter()
    models = [load_model(model_dir, dtype=getattr(torch, dtype)) for _ in range(copies)]
    new_vocab = QWEN25_05B["vocab_size"] + sid_tokens
    if growth == "hf_mean_resizing":
        models[0].resize_token_embeddings(new_vocab)  # the old add_sid_tokens
    elif growth == "grow_vocabulary":
        grow_vocabulary(models[0], new_vocab)
    touch(models)
    print(f"{time.perf_counter() - start:.1f}", flush=True)


def touch(models) -> None:
    """Read every weight once, as moving to the GPU or a training step does: weights loaded in the
    checkpoint's dtype are zero-copy views of the mmapped file, resident only once read."""
    for model in models:
        for p in model.parameters():
            p.data.sum()


def zero3_child(model_dir: str, after: bool) -> None:
    """One rank of `accelerate launch --config_file config/zero3_cpu.yaml`, loading policy + reference.

    before: rl.py's old order, the fp32 policy loaded before the GRPOConfig exists (so whole on every
    rank), the reference (built by TRL after it) partitioned; after: config first, both bf16 and
    partitioned as they load (zero.Init).
    """
    import resource

    import torch
    from trl import GRPOConfig

    from minionerec.model.loading import load_model

    def config():  # use_cpu lets TrainingArguments accept bf16 on this CPU box; only loading is measured
        return GRPOConfig(output_dir="/tmp/load_memory_zero3", per_device_train_batch_size=2, num_generations=2,
                          report_to=[], ddp_backend="gloo", bf16=after, use_cpu=True)

    if after:
        kept = config()  # alive while loading: it holds the HfDeepSpeedConfig that turns zero.Init on
        models = [load_model(model_dir, dtype=torch.bfloat16) for _ in range(2)]
    else:
        models = [load_model(model_dir, dtype=torch.float32)]
        kept = config()
        models.append(load_model(model_dir, dtype=torch.float32))
    rank = kept.process_index
    touch(models)
    partitioned = [hasattr(next(m.parameters()), "ds_id") for m in models]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"rank {rank}: peak RSS {peak_gib:.2f} GiB, partitioned (policy, reference) = {partitioned}", flush=True)


def measure(recipe: str, model_dir: Path, sid_tokens: int) -> tuple[float, str]:
    """(peak RSS of the child in GiB, its stdout)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", recipe, "--model_dir", str(model_dir),
                             "--sid_tokens", str(sid_tokens)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"error: recipe {recipe} failed with exit code {proc.returncode}")
    return usage.ru_maxrss / 2**20, out.strip()  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default="output/bench_qwen25_05b_random", help="built here if missing")
    parser.add_argument("--sid_tokens", type=int, default=768, help="SID tokens added (3 levels x 256 codes)")
    parser.add_argument("--zero3", action="store_true", help="add the 2-process ZeRO-3 row (CPU, gloo)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child.startswith("zero3_"):
        return zero3_child(args.model_dir, after=args.child == "zero3_after")
    if args.child:
        return child(args.child, args.model_dir, args.sid_tokens)

    model_dir = Path(args.model_dir)
    build_model(model_dir)
    print(f"Qwen2.5-0.5B shape, random weights (bf16 on disk), +{args.sid_tokens} SID tokens; peak host RSS "
          f"of one process (ru_maxrss)\n")
    print(f"| {'recipe':<14} | {'what':<72} | peak RSS GiB | load s |")
    print(f"|{'-' * 16}|{'-' * 74}|--------------|--------|")
    for recipe, (what, *_rest) in RECIPES.items():
        peak, seconds = measure(recipe, model_dir, args.sid_tokens)
        print(f"| {recipe:<14} | {what:<72} | {peak:12.2f} | {seconds:>6} |", flush=True)
    if args.zero3:
        print("\nZeRO-3, 2 processes (CPU, gloo), policy + reference; ranks keep their partitions in host memory here")
        launcher = Path(sys.executable).parent / "accelerate"
        for mode in ("zero3_before", "zero3_after"):
            result = subprocess.run([str(launcher), "launch", "--config_file", str(ROOT / "config/zero3_cpu.yaml"),
                                     "--num_processes", "2", __file__, "--child", mode, "--model_dir", str(model_dir)],
                                    capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            ranks = sorted(line for line in result.stdout.splitlines() if line.startswith("rank "))
            if result.returncode or len(ranks) != 2:
                raise SystemExit(f"error: the ZeRO-3 run failed:\n{result.stderr[-2000:]}")
            print(f"{mode}: " + "; ".join(ranks), flush=True)

if __name__ == "__main__":
    main()
