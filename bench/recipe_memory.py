"""The 1-GPU recipes at their real shapes: the first steps of each recipe that fits this GPU, peak memory measured
beside the rehearsal's arithmetic (minionerec.model.memory). Nothing is downloaded: the models are random weights
of the recipe's base_model_shape.

    python -m bench.recipe_memory                  # each 1-GPU recipe whose gpu_memory_gb fits this card (~6 min, H100)
    RECIPES=1 bash bench/gpu_check.sh              # the same, after the GPU self-check
    python -m bench.recipe_memory --smoke true     # CPU, a tiny shape on demo data: the stages run (the test)

For each recipe: a random model of its shape built on the GPU in bf16 (the catalogue's BPE tokenizer, the embedding
padded to the shape's vocabulary), then `bash sft.sh` for --steps steps with the recipe's micro batch (the
accumulation cut to 2: peak memory does not depend on it) and `bash rl.sh` from that checkpoint for --steps steps
with the recipe's batch (TRL generates a step's completions at once: the batch sets the rollout KV cache). Each
run's gpu_memory.json (rank 0's torch.cuda.max_memory_allocated) is set beside the arithmetic for the same run;
the table goes to stdout and OUTPUT_DIR/recipe_memory.json. Without CUDA the measured column reads "-".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from minionerec.launch.report import memory_run
from minionerec.launch.rehearsal import TINY, resolved_config
from minionerec.model.memory import estimate
from minionerec.model.shapes import Shape, named_shape
from minionerec.run import plan as plans
from minionerec.run.cli import run
from minionerec.run.recipe import read_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = "recipes/qwen2.5_1.5b_1gpu.yaml+recipes/qwen2.5_7b_lora_24gb.yaml"


@dataclass
class Args:
    """Peak GPU memory of the 1-GPU recipes' first steps at their real shapes, beside the arithmetic."""

    recipes: str = RECIPES  # recipe files joined by '+'; those whose gpu_memory_gb exceeds this card are skipped
    output_dir: str = "output/recipe_memory"  # models, runs, logs, recipe_memory.json
    data_dir: str = str(ROOT.parent / "shared" / "data" / "Amazon")  # MiniOneRec layout; demo data if missing
    category: str = "Industrial_and_Scientific"
    steps: int = 3  # optimizer steps of each SFT and RL run
    sample: int = 2048  # rows of each SFT task / RL prompts of each task (data loading, not memory)
    smoke: bool = False  # CPU: tiny shape, demo data, 1 step (what the test runs)


def card_gb() -> float | None:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 1e9 if torch.cuda.is_available() else None


def build(shape: Shape, out: Path, item_meta: Path, smoke: bool) -> Path:
    """A random model of `shape` (TINY's width in smoke mode) in bf16, built on the GPU when there is one."""
    import torch

    from minionerec.data.formats import load_item_meta
    from minionerec.model.tiny import ARCHITECTURES, build_tokenizer

    if (out / "config.json").is_file():
        return out
    tokenizer = build_tokenizer(load_item_meta(item_meta), [], vocab_size=600)
    config_cls, model_cls = ARCHITECTURES[shape.family]
    dims = TINY if smoke else dict(hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                                   num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
                                   num_key_value_heads=shape.num_kv_heads)
    config = config_cls(vocab_size=len(tokenizer) if smoke else shape.vocab_size,
                        tie_word_embeddings=shape.tie_word_embeddings, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id, **dims)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = model_cls(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def launch(launcher: str, env: dict, flags: list[str], log: Path) -> str:
    result = subprocess.run(["bash", launcher, *flags], cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log.write_text(result.stdout)
    if result.returncode:
        sys.stderr.write(result.stdout[-3000:])
        raise SystemExit(f"error: {launcher} failed (exit {result.returncode}; log: {log})")
    return result.stdout


def arithmetic(script: str, output: str, run_dir: Path, recipe: str, meta: dict, shape: Shape, sid_index: Path,
               launch_yaml: str) -> dict:
    """minionerec.model.memory's estimate for the run that printed `output` (its plan and resolved flags)."""
    config = run_dir / "run_config.yaml"
    resolved = ({k: v["value"] for k, v in yaml.safe_load(config.read_text())["args"].items()} if config.is_file()
                else resolved_config(output))
    facts = {"script": script, "plan": plans.parse(output), "resolved": resolved, "values": {
        "sid_index_path": str(sid_index)}, "meta": {**meta, "gpus": 1}, "env": {"CONFIG": launch_yaml},
        "launch_yaml": launch_yaml, "shape": shape}
    return estimate(shape, memory_run(facts))


def measured(run_dir: Path) -> dict | None:
    path = run_dir / "gpu_memory.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(args: Args) -> list[dict]:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, category, steps = Path(args.data_dir), args.category, args.steps
    if args.smoke or not data_dir.is_dir():
        from minionerec.prep.make_demo_data import make_demo_data

        data_dir, category, steps = out / "demo_data", "Demo", 1 if args.smoke else steps
        if not data_dir.is_dir():
            make_demo_data(data_dir, category=category, items_per_family=10, num_users=40, seed=0)
    index, items = data_dir / "index" / f"{category}.index.json", data_dir / "index" / f"{category}.item.json"
    card = card_gb()
    rows = []
    for recipe in args.recipes.split("+"):
        meta = {k: v for k, v in read_recipe(str(ROOT / recipe)).items() if not isinstance(v, dict)}
        if card is not None and float(meta.get("gpu_memory_gb", 0)) > card:
            print(f"[recipe_memory] {recipe}: sized for {meta['gpu_memory_gb']} GB, this card has {card:.0f}: skipped")
            continue
        shape, name = named_shape(meta["base_model_shape"]), Path(recipe).stem
        base = build(shape, out / f"model_{shape.name}", items, args.smoke)
        common = {"RECIPE": recipe, "NPROC": "1", "DATA_DIR": str(data_dir), "CATEGORY": category,
                  "PYTHON": sys.executable, "ACCELERATE": str(Path(sys.executable).parent / "accelerate")}
        micro = read_recipe(str(ROOT / recipe))["sft"]["micro_batch_size"]
        sft_dir, rl_dir = out / name / "sft", out / name / "rl"
        sft_out = launch("sft.sh", {**common, "BASE_MODEL": str(base), "OUTPUT_DIR": str(sft_dir)},
                         ["--max_steps", str(steps), "--batch_size", str(2 * micro), "--sample", str(args.sample),
                          "--eval_steps", "1000", "--save_steps", "1000"], out / name / "sft.log")
        rl_out = launch("rl.sh", {**common, "MODEL_PATH": str(sft_dir / "final_checkpoint"), "OUTPUT_DIR": str(rl_dir),
                                  "CONFIG": "config/zero2_opt.yaml"},
                        ["--max_steps", str(steps), "--sample", str(args.sample), "--save_steps", "1000",
                         "--rank_eval_on_valid", "false", "--keep_best", "false"], out / name / "rl.log")
        for stage, output, run_dir, yaml_path in (("sft", sft_out, sft_dir, ""),
                                                   ("rl", rl_out, rl_dir, "config/zero2_opt.yaml")):
            estimate_gb = arithmetic(f"{stage}.py", output, run_dir, recipe, meta, shape, index, yaml_path)
            peak = measured(run_dir)
            rows.append({"recipe": name, "stage": stage, "shape": shape.name,
                         "measured_allocated_gb": peak and peak["max_allocated_gb"],
                         "measured_reserved_gb": peak and peak["max_reserved_gb"],
                         "arithmetic_gb": round(estimate_gb["total"], 1), "device": peak and peak["device"],
                         "arithmetic": {k: round(v, 2) for k, v in estimate_gb.items()}})
    (out / "recipe_memory.json").write_text(json.dumps({"args": asdict(args), "rows": rows}, indent=1))
    print(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["recipe                     stage  shape          measured GB (allocated / reserved)  arithmetic GB  "
             "measured / arithmetic"]
    for r in rows:
        got = r["measured_allocated_gb"]
        ratio = f"{got / r['arithmetic_gb']:.2f}" if got else "-"
        measured_text = f"{got} / {r['measured_reserved_gb']}" if got else "-"
        lines.append(f"{r['recipe']:<26} {r['stage']:<6} {r['shape']:<14} {measured_text:<35} {r['arithmetic_gb']:<14} "
                     f"{ratio}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main, Args)
