"""GPU self-check: the real entry scripts on random-weight Qwen2.5-0.5B- and 1.5B-shaped models, timed.

    bash bench/gpu_check.sh              # one GPU, < 10 minutes (estimate below), no downloads
    SMOKE=1 bash bench/gpu_check.sh      # shrunk, on CPU (the test runs this)

Stages, each a subprocess of the product's own commands, so a pass means the product runs:
  1. build   python -m minionerec.model.tiny, per --shapes shape (0.5B: hidden 896, 24 layers, 14 heads,
             2 KV heads, FFN 4864; 1.5B: hidden 1536, 28 layers, 12 heads, 2 KV heads, FFN 8960; vocabulary
             padded to Qwen2.5's 151,936 rows, tied embeddings as both real ones)
  2. SFT     sft.py, bf16 where supported, per shape and batch size twice: padded (the default, sdpa) and
             --packing with flex_attention (block-sparse: no cross-row pairs; SMOKE: sdpa, as flex has no CPU
             backward), in the same (random) row order, 20 timed steps each -> tokens/s, MFU
             (minionerec/run/throughput.py), packed/padded tokens/s, the largest per-step loss difference
             between the two (bf16 noise: the losses are equal in exact arithmetic) and whether every
             step's loss and gradient norm were finite
  3. eval    evaluate.py, 500 users x 50 constrained beams at batch 8 and at the automatic batch (fills the
             GPU), then the whole test split at the automatic batch
             -> seconds, users/s, invalid predictions (must be 0)
  4. RL      accelerate launch --config_file config/zero2_opt.yaml --num_processes 1 rl.py, 8 GRPO steps
             -> median seconds per step, split into generation and reference scoring (TRL's step_time + ours)
Evaluation and RL start from the first shape's first padded SFT run. Prints one table and writes
OUTPUT_DIR/gpu_check.json. Data: DATA_DIR/CATEGORY in the MiniOneRec layout (default
../shared/data/Amazon Industrial_and_Scientific), or generated demo data if absent. Weights are random,
so the metrics are meaningless: this checks that everything runs, and how fast.

Time on one H200, default flags (estimates from the 2026-11-26 run in bench/RESULTS.md, where the 0.5B
model trained 57k tokens/s at batch 64): builds ~20 s (0.5B) + ~45 s (1.5B); 4 SFT runs of 22 steps at
batch 32 x ~190 tokens: 0.5B ~0.1 s a step, 1.5B ~3.6x its block FLOPs ~0.4 s, packed less (no padding),
so ~40 s of steps in all, plus ~40-60 s a run to start, tokenise, load and save (bf16: 1 GB, 3 GB) and
~30-60 s for each packed run to compile flex attention's kernel -> ~5 min; evaluation ~2 min; RL ~1.5 min;
~8.5 min in all (not measured: no GPU since packing came in). Batch 32, not 64: padded 1.5B rows of up to 512 tokens at 64 would need
~110 GB of activations next to 25 GB of fp32 weights, gradients and Adam state.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from minionerec.run.cli import run
from minionerec.data.formats import find_split
from minionerec.run.topology import find_free_port as free_port

ROOT = Path(__file__).resolve().parents[1]

# Qwen2.5-0.5B's and 1.5B's shapes (their config.json); the BPE tokenizer is trained on the catalogue instead.
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                         model_vocab_size=151936),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960,
                         model_vocab_size=151936),
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, model_vocab_size=0),
}


@dataclass
class Args:
    """GPU self-check: build 0.5B- and 1.5B-shaped models, then time SFT (padded and packed), evaluation and GRPO
    through the real scripts."""

    output_dir: str = "output/gpu_check"  # work directory (model, checkpoints, JSON)
    data_dir: str = str(ROOT.parent / "shared" / "data" / "Amazon")  # MiniOneRec layout; demo data if missing
    category: str = "Industrial_and_Scientific"
    shapes: str = "qwen2.5-0.5b+qwen2.5-1.5b"  # model shapes joined by '+' (qwen2.5-0.5b, qwen2.5-1.5b, tiny)
    sft_steps: int = 20  # timed after 2 warm-up steps
    # rows per step (no accumulation), a padded and a packed SFT run per value and shape; 256 ran out of 139 GB
    # on an H200 with the 0.5B model and the five-task mix (rows up to 512 tokens); 32 fits the 1.5B (docstring)
    sft_batch_sizes: str = "32"
    eval_users: int = 500
    eval_beams: int = 50
    eval_batch_sizes: str = "8+0"  # prompts per generate call, one evaluation per value; 0 = evaluate.py's auto
    eval_full_test: bool = True  # also the whole test split at the last batch size (the 4,533-user target)
    rl_steps: int = 8
    rl_batch_size: int = 64  # completions per step = 4 prompts x 16 beams
    num_generations: int = 16
    launch_config: str = "config/zero2_opt.yaml"  # accelerate YAML for the RL stage (1 process)
    smoke: bool = False  # CPU: tiny shape, demo data, a few steps (what the test runs)


def shrink_for_smoke(args: Args) -> Args:
    """Seconds on 2 CPU cores: the same stages with toy sizes."""
    return Args(**{**asdict(args), "shapes": "tiny", "sft_steps": 4, "sft_batch_sizes": "8", "eval_users": 16,
                   "eval_beams": 8, "eval_batch_sizes": "0", "eval_full_test": False, "rl_steps": 3,
                   "rl_batch_size": 8,
                   "num_generations": 4, "launch_config": "config/zero2_cpu.yaml",
                   "data_dir": str(Path(args.output_dir) / "demo_data"), "category": "Demo"})


def sh(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, str]:
    """Run one stage; its output goes to `log` (and the tail to stderr on failure). Returns (seconds, output)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    log.write_text(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:])
        raise SystemExit(f"error: stage failed (exit {proc.returncode}): {' '.join(cmd[:3])} ... (log: {log})")
    return time.perf_counter() - start, proc.stdout


def data_files(data_dir: Path, category: str) -> dict[str, Path]:
    """The split CSVs (minionerec.data.formats.find_split: one DataError line when absent) and the index files."""
    return {**{split: find_split(data_dir, split, category) for split in ("train", "valid", "test")},
            "index": data_dir / "index" / f"{category}.index.json",
            "items": data_dir / "index" / f"{category}.item.json"}


def environment() -> dict:
    import torch
    import transformers
    import trl

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "transformers": transformers.__version__,
            "trl": trl.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def rl_timings(state_path: Path) -> dict:
    """Median seconds per GRPO step and of its generation / reference-scoring parts, over the steps after the
    first (DeepSpeed allocates its buckets and kernels are chosen in the first steps: the median skips those)."""
    history = [h for h in json.loads(state_path.read_text())["log_history"] if "step_time" in h]
    timed = history[1:] or history
    median = lambda key: round(statistics.median(h.get(key, 0.0) for h in timed), 3)  # noqa: E731
    return {"steps_timed": len(timed), "step_s": median("step_time"), "generation_s": median("time/generation_s"),
            "scoring_reference_s": median("time/scoring_reference_s"),
            "finite_steps": f"{sum(math.isfinite(h['loss']) for h in timed)}/{len(timed)}"}


def batch_sizes(spec: str) -> list[int]:
    try:
        return [int(b) for b in spec.split("+")]
    except ValueError:
        raise SystemExit(f"error: batch sizes are numbers joined by '+', e.g. 8+64, got {spec!r}") from None


def shape_names(spec: str) -> list[str]:
    names = spec.split("+")
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        raise SystemExit(f"error: --shapes takes names joined by '+' from {', '.join(SHAPES)}, got {spec!r}")
    return names


def build(py: str, out: Path, files: dict, shape: str, env: dict) -> tuple[Path, float]:
    """The random-weight model of `shape` with a catalogue tokenizer. Returns (its directory, seconds)."""
    model_dir = out / f"base_{shape}"
    seconds, _ = sh([py, "-m", "minionerec.model.tiny", "--output_dir", str(model_dir), "--sid_index_path",
                     str(files["index"]), "--item_meta_path", str(files["items"]),
                     *[f"--{k}={v}" for k, v in SHAPES[shape].items()]], out / f"build_{shape}.log", env)
    return model_dir, seconds


def sft_run(py: str, files: dict, model_dir: Path, sft_dir: Path, batch: int, steps: int, packing: bool,
            attn: str, env: dict) -> dict:
    """One sft.py run of `steps` + 2 warm-up steps at `batch` rows a step (random order, so the padded and
    packed runs see the same rows): wall time, per-step losses, finiteness and throughput.json's fields."""
    seconds, _ = sh([py, "sft.py", "--base_model", str(model_dir), "--train_file", str(files["train"]),
                     "--sid_index_path", str(files["index"]), "--item_meta_path", str(files["items"]),
                     "--output_dir", str(sft_dir), "--max_steps", str(steps + 2), "--batch_size", str(batch),
                     "--micro_batch_size", str(batch), "--learning_rate", "1e-4", "--save_steps", "100000",
                     "--logging_steps", "1", "--packing", str(packing).lower(), "--attn_implementation", attn],
                    sft_dir.with_suffix(".log"), env)
    history = [h for h in json.loads((sft_dir / "trainer_state.json").read_text())["log_history"] if "grad_norm" in h]
    finite = [math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in history]
    return {"wall_s": round(seconds, 1), "batch": batch, "layout": "packed" if packing else "padded", "attention": attn,
            "finite_steps": f"{sum(finite)}/{len(finite)}", "losses": [h["loss"] for h in history],
            **json.loads((sft_dir / "throughput.json").read_text())}


def packed_vs_padded(padded: dict, packed: dict) -> dict:
    """tokens/s packed / padded (the same rows, so TFLOP/s and MFU scale alike) and the largest step loss gap."""
    gaps = [abs(a - b) for a, b in zip(padded["losses"], packed["losses"])]
    return {"shape": packed["shape"], "batch": packed["batch"], "steps": len(gaps),
            "tokens_per_s": round(packed["tokens_per_s"] / padded["tokens_per_s"], 2),
            "max_loss_diff": round(max(gaps), 4) if gaps else None}


def sft_stage(py: str, out: Path, files: dict, args: Args, env: dict, report: dict) -> Path:
    """Build each shape, then a padded and a packed SFT run per batch size. Returns the first padded run's
    final_checkpoint (evaluation and RL start from it); the others' are deleted (the 1.5B's is 6 GB)."""
    report["build_s"], report["sft"], report["sft_packed_vs_padded"] = {}, [], []
    start = None
    for shape in shape_names(args.shapes):
        model_dir, seconds = build(py, out, files, shape, env)
        report["build_s"][shape] = round(seconds, 1)
        for batch in batch_sizes(args.sft_batch_sizes):
            runs = []
            for layout in ("padded", "packed"):
                sft_dir = out / f"sft_{shape}_b{batch}_{layout}"
                # packed rows on CUDA: flex_attention's block mask skips the cross-row pairs sdpa's dense mask
                # computes (flex has no CPU backward: SMOKE packs with sdpa)
                attn = "flex_attention" if layout == "packed" and not args.smoke else "sdpa"
                runs.append({"shape": shape, **sft_run(py, files, model_dir, sft_dir, batch, args.sft_steps,
                                                       layout == "packed", attn, env)})
                if start is None:
                    start = sft_dir / "final_checkpoint"
                else:
                    shutil.rmtree(sft_dir / "final_checkpoint")
            report["sft"] += runs
            report["sft_packed_vs_padded"].append(packed_vs_padded(*runs))
    return start


def main(args: Args) -> dict:
    if args.smoke:
        args = shrink_for_smoke(args)
    shape_names(args.shapes)  # fail before any work
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = {"TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    data_dir = Path(args.data_dir)
    if not (data_dir / "index" / f"{args.category}.index.json").is_file():
        print(f"[gpu_check] {data_dir} lacks {args.category}: generating demo data")
        data_dir, args.category = out / "demo_data", "Demo"
        sh([py, "minionerec/prep/make_demo_data.py", "--output_dir", str(data_dir), "--category", "Demo"], out / "data.log", env)
    files = data_files(data_dir, args.category)
    report = {"environment": environment(), "shapes": args.shapes, "data": f"{data_dir} {args.category}"}
    print(f"[gpu_check] {report['environment']}")
    start = sft_stage(py, out, files, args, env, report)  # evaluation and RL start from this final_checkpoint

    report["eval"] = []
    runs = [(b, args.eval_users) for b in batch_sizes(args.eval_batch_sizes)]
    if args.eval_full_test:
        runs.append((runs[-1][0], -1))
    for batch, users in runs:
        tag = f"b{batch}_{'all' if users < 0 else users}"
        seconds, log = sh([py, "evaluate.py", "--base_model", str(start),
                           "--test_file", str(files["test"]), "--sid_index_path", str(files["index"]),
                           "--result_json", str(out / f"eval_{tag}.json"), "--sample", str(users),
                           "--num_beams", str(args.eval_beams), "--batch_size", str(batch)], out / f"eval_{tag}.log", env)
        users = int(re.search(r"\] \S+: (\d+) users", log).group(1))
        decoding = float(re.search(r"decoding ([0-9.]+)s", log).group(1))
        invalid = int(re.search(r"^constrained beam search .* (\d+) +\d+$", log, re.M).group(1))
        used = int(re.search(r"beams, batch (\d+),", log).group(1))  # the auto batch (0) resolved
        report["eval"].append({"batch": f"{used} (auto)" if batch == 0 else used, "users": users, "beams": args.eval_beams, "decoding_s": decoding,
                               "users_per_s": round(users / decoding, 1), "invalid": invalid,
                               "wall_s": round(seconds, 1)})

    rl_dir = out / "rl"
    seconds, _ = sh([py, "-m", "accelerate.commands.launch", "--config_file", args.launch_config,
                     "--num_processes", "1", "--main_process_port", str(free_port()), "rl.py",
                     "--model_path", str(start), "--train_file", str(files["train"]),
                     "--sid_index_path", str(files["index"]), "--item_meta_path", str(files["items"]),
                     "--output_dir", str(rl_dir), "--max_steps", str(args.rl_steps),
                     "--batch_size", str(args.rl_batch_size), "--micro_batch_size", str(args.rl_batch_size), "--num_generations", str(args.num_generations),
                     "--learning_rate", "1e-6", "--beta", "0.04", "--title_history_sample", "1000",
                     "--save_steps", "100000", "--logging_steps", "1"], out / "rl.log", env)
    report["rl"] = {"wall_s": round(seconds, 1), "completions_per_step": args.rl_batch_size,
                    **rl_timings(rl_dir / "trainer_state.json")}

    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(format_report(report))
    return report


def sft_lines(r: dict, width: int) -> list[str]:
    """Per shape and batch: the padded run, the packed run, then packed / padded."""
    lines = []
    for padded, packed, ratio in zip(r["sft"][::2], r["sft"][1::2], r["sft_packed_vs_padded"]):
        for s in (padded, packed):
            mfu = f"{s['mfu']:.1%}" if s.get("mfu") is not None else "n/a"
            setting = (f"{s['shape']} batch {s['batch']} {s['layout']} ({s['attention']}), {s['timed_steps']} timed steps, "
                       f"mean len {s['mean_seq_len']}")
            lines.append(f"{'SFT':<6} {setting:<{width}} {s['tokens_per_s']:,.0f} tokens/s, {s['tflops_per_gpu']} "
                         f"TFLOP/s, MFU {mfu}; finite loss+grad steps {s['finite_steps']}")
        setting = f"{ratio['shape']} batch {ratio['batch']} packed/padded"
        lines.append(f"{'SFT':<6} {setting:<{width}} {ratio['tokens_per_s']}x tokens/s, TFLOP/s and MFU; largest step "
                     f"loss difference {ratio['max_loss_diff']} over {ratio['steps']} steps")
    return lines


def format_report(r: dict) -> str:
    env, rl, width = r["environment"], r["rl"], 62
    lines = [f"== gpu_check: {env['device']}, torch {env['torch']} (CUDA {env['cuda']}), "
             f"transformers {env['transformers']}, trl {env['trl']}, {env['date']}; shapes {r['shapes']}",
             f"{'stage':<6} {'setting':<{width}} result"]
    lines += [f"{'build':<6} {shape + ' model + tokenizer written':<{width}} {seconds} s"
              for shape, seconds in r["build_s"].items()]
    lines += sft_lines(r, width)
    for e in r["eval"]:
        setting = f"{e['users']} users x {e['beams']} beams, batch {e['batch']}"
        lines.append(f"{'eval':<6} {setting:<{width}} {e['decoding_s']} s decoding, {e['users_per_s']} users/s, "
                     f"{e['invalid']} invalid")
    setting = f"{rl['completions_per_step']} completions/step, median of {rl['steps_timed']} steps"
    lines.append(f"{'RL':<6} {setting:<{width}} {rl['step_s']} s/step (generation {rl['generation_s']} s, "
                 f"reference scoring {rl['scoring_reference_s']} s); finite loss steps {rl['finite_steps']}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main, Args)
