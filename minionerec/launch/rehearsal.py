"""Rehearse a GPU recipe on CPU: the launcher's own command, end to end, with a tiny model of the base model's family.

    REHEARSE=1 RECIPE=recipes/qwen2.5_7b_lora_24gb.yaml NPROC=1 bash sft.sh      (or: bash sft.sh --rehearse)
    REHEARSE=1 RECIPE=recipes/qwen2.5_7b_lora_24gb.yaml NPROC=1 bash rl.sh
    REHEARSE=1 bash evaluate.sh

The launcher resolves its paths, recipe and topology as for a real run, then hands this module its launch command
(torchrun / accelerate launch) and the script's flags. Training scripts (sft.py, rl.py) then run, each through that
same launch command:
  1. the pre-check (python -m minionerec.run.prelaunch: the script's dry run for the world about to start), whose
     plan line gives the real data's steps per epoch;
  2. STEPS optimizer steps of the recipe (its batch, LoRA, DeepSpeed JSON, checkpointing, packing, evaluations,
     early stopping, keep_best), stopping after step STOP with a checkpoint (--stop_after_step);
  3. a resume from that checkpoint to step STEPS and the final save (bf16, as on a bf16 GPU);
  4. evaluate.sh on the final checkpoint, with the recipe's evaluate section;
evaluate.py runs 1 and 4 on a stand-in checkpoint. What runs is checked from the outputs (checkpoint, trainer state,
curves, final dtype, merged adapters) and a one-screen report follows: world size, global batch, steps per epoch on the
real data, what ran, what was substituted and the per-GPU memory of the real model by arithmetic
(minionerec.model.memory). A multi-node command rehearses on every node (each node runs its own phases; the
report is node 0's).

The stand-in: the base model's family (qwen2 / llama) and embedding tying, read from its config.json, or from the
recipe's `base_model_shape` when the directory is not here; its tokenizer when the directory has one (else a small
BPE trained on the catalogue); hidden 32 x 2 layers, random, saved in bf16. What cannot run on CPU is named with its
substitute: CUDA -> CPU, NCCL -> gloo, flex_attention -> sdpa, logging services -> none.
Knobs: REHEARSAL_DIR (default output/rehearsal/<script>), REHEARSE_GPUS (GPUs per node a default NPROC counts: 1).
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from minionerec.launch import report as reporting
from minionerec.model.shapes import DEFAULT, Shape, named_shape, shape_of_config
from minionerec.run import plan as plans
from minionerec.run.atomic import atomic_path
from minionerec.run.recipe import read_recipe
from minionerec.run.flags import RENAMED_FLAGS
from minionerec.run.launch_config import deepspeed_file_of, sft_deepspeed, zero_stage

STEPS, STOP = 4, 2  # optimizer steps of a rehearsal; the step after which the first launch stops with a checkpoint
EVAL_ROWS = 16  # valid rows of an in-training ranking evaluation, test users of evaluate.sh
EVAL_LOSS_ROWS = 64  # valid rows of SFT's in-training eval loss (the whole split: ~1 min a pass on CPU for Industrial)
QUICK_ACCUMULATION = 2  # REHEARSE_QUICK=1: micro-steps per optimizer step
REHEARSAL = "MINIONEREC_REHEARSAL"  # in every phase's environment: bf16 as on a bf16 GPU (model.loading.REHEARSAL)
MODEL_FLAG = {"sft.py": "base_model", "rl.py": "model_path", "evaluate.py": "base_model"}
# step-count intervals that must fire within STEPS steps (fractions of the run scale by themselves)
INTERVALS = {"eval_steps": STOP, "save_steps": STOP, "rank_eval_every": STOP, "logging_steps": 1}
ZERO2_YAML = "config/zero2_opt.yaml"  # a ZeRO-3 launch's stand-in where ZeRO-3 cannot run on CPU
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


class RehearsalError(RuntimeError):
    """A phase failed or an output is missing: the message names the phase and its log."""


# ---- flags ----------------------------------------------------------------------------------------------------

def flag_pairs(argv: list[str]) -> list[tuple[str, str]]:
    """`--flag value`, `--flag=value` and bare `--flag` (true) -> [(flag, value)] in order."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise RehearsalError(f"expected a --flag, got {token!r}")
        name, eq, value = token[2:].partition("=")
        if not eq:
            following = argv[i + 1] if i + 1 < len(argv) else None
            value, i = (following, i + 1) if following is not None and not following.startswith("--") else ("true", i)
        pairs.append((name, value))
        i += 1
    return pairs


def new_names(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`pairs` with each renamed flag's old name (minionerec.run.flags.RENAMED_FLAGS) replaced by its new one, warned
    as the script warns: the rehearsal's substitutions set flags by their new names."""
    for name, _ in pairs:
        if name in RENAMED_FLAGS:
            print(f"warning: --{name} is deprecated; use --{RENAMED_FLAGS[name]}", file=sys.stderr)
    return [(RENAMED_FLAGS.get(name, name), value) for name, value in pairs]


def as_argv(pairs: list[tuple[str, str]]) -> list[str]:
    return [t for name, value in pairs for t in (f"--{name}", str(value))]


def with_flags(pairs: list[tuple[str, str]], **values) -> list[tuple[str, str]]:
    """`pairs` with each named flag set once to its new value (None drops it)."""
    kept = [(n, v) for n, v in pairs if n not in values]
    return kept + [(n, str(v)) for n, v in values.items() if v is not None]


def truthy(value) -> bool:
    return str(value).lower() in ("true", "1", "yes", "y")


# ---- the stand-in model ---------------------------------------------------------------------------------------

def real_shape(model_dir: str, recipe: dict) -> tuple[Shape, str]:
    """(shape, where it came from): the directory's config.json, else the recipe's base_model_shape, else DEFAULT."""
    config = Path(model_dir, "config.json")
    if config.is_file():
        return shape_of_config(config, Path(model_dir).name), f"{config}"
    name = recipe.get("base_model_shape")
    return named_shape(name or DEFAULT), ("the recipe's base_model_shape" if name else "the default shape")


def build_stand_in(out: Path, shape: Shape, model_dir: str, sid_index_path: str, item_meta_path: str,
                   with_sids: bool) -> str:
    """A tiny random model of `shape`'s family and tying at `out` (skipped when another node built it); returns
    where its tokenizer came from. with_sids: the tokenizer already holds the SID tokens (an SFT checkpoint)."""
    import torch
    from transformers import AutoTokenizer

    from minionerec.data.formats import load_item_meta, load_sid_index, sid_vocabulary
    from minionerec.model.loading import VOCAB_MULTIPLE, missing_sid_tokens
    from minionerec.model.tiny import ARCHITECTURES, build_tokenizer

    sid_tokens = sid_vocabulary(load_sid_index(sid_index_path))
    if any(Path(model_dir, name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer, source = AutoTokenizer.from_pretrained(model_dir), f"the tokenizer of {model_dir}"
        if with_sids:
            tokenizer.add_tokens(missing_sid_tokens(tokenizer, sid_tokens))
    else:
        meta = load_item_meta(item_meta_path) if item_meta_path and Path(item_meta_path).is_file() else {}
        tokenizer = build_tokenizer(meta, sid_tokens if with_sids else [], vocab_size=600)
        source = "a BPE tokenizer trained on the catalogue"
    if out.is_dir():
        return source
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config_cls, model_cls = ARCHITECTURES[shape.family]
    vocab = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    torch.manual_seed(0)
    model = model_cls(config_cls(vocab_size=vocab, tie_word_embeddings=shape.tie_word_embeddings,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=tokenizer.eos_token_id, **TINY)).to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, out)
    except OSError:  # another node's driver built the same (seeded) stand-in first
        shutil.rmtree(tmp, ignore_errors=True)
    return source


# ---- phases ---------------------------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    seconds: float
    log: Path
    output: str = field(repr=False)


def run_phase(name: str, cmd: list[str], log_dir: Path, env: dict) -> Phase:
    """Run one phase, its output to log_dir/<name>.log; a failure raises with the log's last lines."""
    log = log_dir / f"{name}.log"
    started = time.monotonic()
    print(f"[rehearsal] {name}: {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    output = log.read_text()
    seconds = time.monotonic() - started
    if result.returncode != 0:
        tail = "\n".join(line for line in output.splitlines()[-25:])
        raise RehearsalError(f"{name} failed (exit {result.returncode}, {seconds:.0f} s); its log, {log}, ends:\n{tail}")
    print(f"[rehearsal] {name}: ok ({seconds:.0f} s)", flush=True)
    return Phase(name, seconds, log, output)


RESOLVED = re.compile(r"^  (\w+) +(.+?) +(default|command line|recipe \S+)$")


def resolved_config(text: str) -> dict:
    """The values a script printed in its `[config] ... resolved` block (every flag, defaults included)."""
    values = {}
    for line in text.splitlines():
        match = RESOLVED.match(line)
        if match:
            try:
                values[match.group(1)] = ast.literal_eval(match.group(2))
            except (ValueError, SyntaxError):
                values[match.group(1)] = match.group(2)
    return values


def substitutions(script: str, values: dict, plan, out: Path) -> tuple[dict, list[str]]:
    """Flags that make the recipe a CPU rehearsal (`values`: the script's resolved flags; `plan`: the real run's), and
    a line for each; files they need are written under `out`."""
    flags, notes = {}, []
    if script == "sft.py" and values.get("eval_file"):
        import pandas as pd

        rows = pd.read_csv(values["eval_file"], dtype=str, keep_default_na=False)  # the values as written
        if len(rows) > EVAL_LOSS_ROWS:
            flags["eval_file"] = out / "eval_rows.csv"
            with atomic_path(flags["eval_file"]) as tmp:  # every node writes the same rows, each file whole
                rows.head(EVAL_LOSS_ROWS).to_csv(tmp, index=False)
            notes.append(f"eval_file: its first {EVAL_LOSS_ROWS} of {len(rows):,} rows for the eval loss")
    if script != "evaluate.py":
        total = f"{plan.total_steps:,} steps" if plan is not None else "the recipe's steps"
        notes.append(f"{total} -> {STEPS} (stopped after {STOP} with a checkpoint, then resumed)")
        for name, value in INTERVALS.items():
            if name in values and values[name] >= 1 and values[name] != value:
                flags[name] = value
                notes.append(f"{name} {values[name]} -> {value} (to fire within {STEPS} steps)")
        if values.get("rank_eval_on_valid") and not 0 <= values.get("eval_sample", 0) <= EVAL_ROWS:
            flags["eval_sample"] = EVAL_ROWS
            notes.append(f"eval_sample {values['eval_sample']} -> {EVAL_ROWS} valid rows per ranking evaluation")
        if values.get("report_to", "none") != "none":
            flags["report_to"] = "none"
            notes.append(f"report_to {values['report_to']} -> none (no logging service here)")
    if values.get("attn_implementation") == "flex_attention":
        flags["attn_implementation"] = "sdpa"
        notes.append("attn_implementation flex_attention -> sdpa (flex_attention has no CPU backward)")
    return flags, notes


def lora_zero3(script: str, launch: list[str], values: dict, env: dict, flags: dict) -> tuple[list[str], list[str]]:
    """LoRA under ZeRO-3 -> ZeRO-2 on CPU: peft gathers the trainable SID rows of a ZeRO-3 model onto a CUDA device
    (peft 0.21's TrainableTokensLayer has no CPU path). Returns the launch command and the report's line."""
    if not int(values.get("lora_r", 0)):
        return launch, []
    why = "(peft initialises LoRA's trainable SID rows under ZeRO-3 on CUDA only)"
    if script == "sft.py" and values.get("deepspeed") and zero_stage(sft_deepspeed(values["deepspeed"])) == 3:
        flags["deepspeed"] = "config/sft_zero2.json"
        return launch, [f"deepspeed {values['deepspeed']} -> config/sft_zero2.json {why}"]
    config = env.get("CONFIG", "")
    if script == "rl.py" and config and launch_zero3(config):
        env["CONFIG"] = ZERO2_YAML
        return [t.replace(config, ZERO2_YAML) for t in launch], [f"launch YAML {config} -> {ZERO2_YAML} {why}"]
    return launch, []


def launch_zero3(launch_yaml: str) -> bool:
    """Whether an accelerate launch YAML runs DeepSpeed ZeRO-3 (its zero_stage, or its DeepSpeed JSON's stage)."""
    import yaml

    ds = yaml.safe_load(Path(launch_yaml).read_text()).get("deepspeed_config") or {}
    if "deepspeed_config_file" in ds:
        return zero_stage(deepspeed_file_of(launch_yaml, ds["deepspeed_config_file"])) == 3
    return int(ds.get("zero_stage", 0)) == 3


def quick_batch(script: str, plan, values: dict) -> tuple[dict, list[str]]:
    """REHEARSE_QUICK=1 (the CI test of every documented command): QUICK_ACCUMULATION micro-steps an optimizer step,
    and for RL one group of completions a pass; the plan and the memory arithmetic keep the recipe's batch."""
    if plan is None:
        return {}, []
    micro = min(plan.micro, plan.generations) if script == "rl.py" else plan.micro
    batch = micro * plan.world * QUICK_ACCUMULATION
    if batch >= plan.global_batch or (script == "rl.py" and batch % (plan.generations * plan.world)):
        return {}, []
    flags = {"batch_size": batch, **({"micro_batch_size": micro} if micro != plan.micro else {})}
    return flags, [f"batch_size {plan.global_batch} -> {batch}" + (f", micro_batch_size {plan.micro} -> {micro}"
                   if micro != plan.micro else "") + f" (REHEARSE_QUICK: accumulation {QUICK_ACCUMULATION}"
                   + (", one group a pass" if script == "rl.py" else "") + "; every option kept)"]


def recipe_values(recipe_path: str, script: str, pairs: list[tuple[str, str]]) -> tuple[dict, dict]:
    """(the recipe's meta keys, its section for `script` overridden by the command line's flags)."""
    recipe = read_recipe(recipe_path) if recipe_path else {}
    section = dict(recipe.get(Path(script).stem) or {})
    section.update(dict(pairs))
    return {k: v for k, v in recipe.items() if not isinstance(v, dict)}, section


def rehearse(script: str, launch: list[str], argv: list[str], env: dict) -> dict:
    """Run the phases of `script` through `launch`; returns what the report shows."""
    pairs = new_names([(n, v) for n, v in flag_pairs(argv) if n != "rehearse"])
    meta, values = recipe_values(dict(pairs).get("recipe", ""), script, pairs)
    node = int(env.get("NODE_RANK", 0))
    out = Path(env.get("REHEARSAL_DIR") or f"output/rehearsal/{Path(script).stem}")
    run_dir, logs = out / "run", out / f"logs_node{node}"
    shutil.rmtree(run_dir if script != "evaluate.py" else out / "eval", ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    model_dir = values[MODEL_FLAG[script]]
    shape, shape_source = real_shape(model_dir, meta)
    kind = "sft-base" if script == "sft.py" else "with-sids"
    stand_in = out / (f"stand_in_{shape.family}_{'tied' if shape.tie_word_embeddings else 'untied'}_{kind}_"
                      f"{zlib.crc32(str(Path(model_dir).resolve()).encode()):08x}")
    item_meta = values.get("item_meta_path") or str(Path(env.get("DATA_DIR", ""), "index",
                                                         f"{env.get('CATEGORY', '')}.item.json"))
    tokenizer_source = build_stand_in(stand_in, shape, model_dir, values["sid_index_path"], item_meta,
                                      with_sids=script != "sft.py")
    notes = [f"model: {shape.name} ({shape.family}, {'tied' if shape.tie_word_embeddings else 'untied'} embeddings, "
             f"from {shape_source}) -> a random {shape.family} of the same tying, hidden {TINY['hidden_size']} x "
             f"{TINY['num_hidden_layers']} layers, with {tokenizer_source}",
             "device: CUDA -> CPU (gloo instead of NCCL; bf16 autocast on the CPU, as on a bf16 GPU)"]
    env = {**env, REHEARSAL: "1", "REHEARSE": "0", "TOKENIZERS_PARALLELISM": "false"}
    python = env.get("PYTHON") or sys.executable
    dry = truthy(values.get("dry_run", "false"))
    common = with_flags(pairs, **{MODEL_FLAG[script]: stand_in})
    if script == "evaluate.py":
        common = with_flags(common, result_json=out / "eval" / "predictions.json", sample=EVAL_ROWS)
        notes.append(f"evaluation: the first {EVAL_ROWS} test users")
    else:
        common = with_flags(common, output_dir=run_dir, resume_from_checkpoint=None, stop_after_step=None)
    topology = ["--nproc", env["NPROC"], "--nnodes", env["NNODES"], "--node_rank", str(node)]
    world = ["--world_size", "1"] if script == "evaluate.py" else []  # evaluate.py's batch does not depend on it
    check = run_phase("1-precheck", [python, "-m", "minionerec.run.prelaunch", *topology, *world, "--show_config", "--",
                                     script, *as_argv(with_flags(common, dry_run=None))], logs, env)
    facts = {"script": script, "node": node, "values": values, "shape": shape, "notes": notes, "run_dir": run_dir,
             "tokenizer": tokenizer_source,
             "logs": logs, "env": env, "meta": meta, "phases": [check], "dry_run": dry,
             "plan": plans.parse(check.output)}
    resolved = resolved_config(check.output)
    facts.update(resolved=resolved, launch_yaml=env.get("CONFIG", ""))  # the real run's, for the memory lines
    if dry:
        return facts
    flags, more = substitutions(script, resolved, facts["plan"], out)
    if script != "evaluate.py":
        flags["max_steps"] = STEPS  # after the pre-check, whose plan is the real run's
    launch, cpu_only = lora_zero3(script, launch, resolved, env, flags)
    notes += cpu_only
    if env.get("REHEARSE_QUICK") == "1":
        quick, why = quick_batch(script, facts["plan"], resolved)
        flags, more = {**flags, **quick}, more + why
    notes += more
    common = with_flags(common, **flags)
    if script == "evaluate.py":
        facts["phases"].append(run_phase("2-evaluate", [*launch, script, *as_argv(common)], logs, env))
        return facts
    first = run_phase(f"2-train-to-step-{STOP}", [*launch, script, *as_argv(with_flags(common, stop_after_step=STOP))],
                      logs, env)
    facts["phases"].append(first)
    if not (run_dir / f"checkpoint-{STOP}").is_dir():
        raise RehearsalError(f"{first.name}: no {run_dir}/checkpoint-{STOP} after --stop_after_step {STOP} ({first.log})")
    facts["phases"].append(run_phase(f"3-resume-to-step-{STEPS}", [*launch, script, *as_argv(with_flags(
        common, resume_from_checkpoint="true"))], logs, env))
    if env.get("REHEARSE_QUICK") == "1":  # the CI test rehearses each documented evaluate.sh command on its own
        notes.append("evaluate.sh on the result: skipped (REHEARSE_QUICK)")
        return facts
    # the training phases' port: free again, and every node knows it (a port of its own might be taken on one node)
    evaluate_env = {**env, "MODEL": str(run_dir / "final_checkpoint"),
                    "RESULT_JSON": str(out / "eval" / "predictions.json"), "PRECHECK": "1"}
    facts["phases"].append(run_phase("4-evaluate", ["bash", "evaluate.sh", "--sample", str(EVAL_ROWS)], logs,
                                     evaluate_env))
    return facts


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in MODEL_FLAG or "--" not in argv:
        print("error: usage: python -m minionerec.launch.rehearsal sft.py|rl.py|evaluate.py LAUNCH... -- FLAGS...\n"
              "(the launchers call it under REHEARSE=1; see sft.sh)", file=sys.stderr)
        return 2
    split = argv.index("--")
    script, launch, flags = argv[0], argv[1:split], argv[split + 1:]
    try:
        facts = rehearse(script, launch, flags, dict(os.environ))
        print(reporting.report(facts), flush=True)
    except (RehearsalError, reporting.OutputMissing, ValueError) as e:
        print(f"error: rehearsal of {script}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
