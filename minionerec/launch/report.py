"""The rehearsal's one-screen report: what ran (each item checked from the run's outputs), what was substituted, the
run's shape on the real data, and the per-GPU memory of the real model by arithmetic."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from minionerec.model.memory import Run, activations_without_checkpointing, estimate
from minionerec.run.launch_config import deepspeed_file_of, sft_deepspeed, zero_stage

class OutputMissing(RuntimeError):
    """A phase ended without the output the recipe asked for."""


def resolved_args(facts: dict) -> dict:
    """The run's args as it resolved them (run_config.yaml), or the recipe + flags of a dry run."""
    config = facts["run_dir"] / "run_config.yaml"
    if facts["script"] != "evaluate.py" and config.is_file():
        return {k: v["value"] for k, v in yaml.safe_load(config.read_text())["args"].items()}
    return facts["values"]


def deepspeed_json(facts: dict, args: dict, launch_yaml: str | None = None) -> str | None:
    """The DeepSpeed JSON the run used: sft.py's --deepspeed, rl.sh's launch YAML's deepspeed_config_file."""
    if facts["script"] == "sft.py":
        return sft_deepspeed(args.get("deepspeed") or "")
    launch_yaml = facts["env"].get("CONFIG", "") if launch_yaml is None else launch_yaml
    if facts["script"] == "rl.py" and launch_yaml:
        ds = (yaml.safe_load(Path(launch_yaml).read_text()).get("deepspeed_config") or {})
        if "deepspeed_config_file" in ds:
            return deepspeed_file_of(launch_yaml, ds["deepspeed_config_file"])
    return None


def launch_zero(facts: dict, args: dict, launch_yaml: str | None = None) -> tuple[int, bool, bool, float]:
    """(ZeRO stage, optimizer offloaded, parameters offloaded, bucket elements) of the run's launch config (or of
    `launch_yaml`, the real run's, where the rehearsal substituted one)."""
    path = deepspeed_json(facts, args, launch_yaml)
    if path:
        zero = json.loads(Path(path).read_text()).get("zero_optimization") or {}
        buckets = sum(float(zero.get(k, 5e8)) if not isinstance(zero.get(k), str) else 0.0
                      for k in ("reduce_bucket_size", "allgather_bucket_size"))
        return (zero_stage(path), (zero.get("offload_optimizer") or {}).get("device") == "cpu",
                (zero.get("offload_param") or {}).get("device") == "cpu", buckets)
    launch_yaml = facts["env"].get("CONFIG", "") if launch_yaml is None else launch_yaml
    if facts["script"] == "rl.py" and launch_yaml:
        config = yaml.safe_load(Path(launch_yaml).read_text())
        ds = config.get("deepspeed_config") or {}
        if config.get("distributed_type") == "DEEPSPEED":
            return (int(ds.get("zero_stage", 0)), ds.get("offload_optimizer_device") == "cpu",
                    ds.get("offload_param_device") == "cpu", 1e9)
    return 0, False, False, 0.0


def memory_run(facts: dict) -> Run | None:
    """The real run's memory inputs: the pre-check's resolved flags and launch config (before any CPU substitute), at
    the recipe's `gpus` when it names more processes than the rehearsal ran."""
    plan, args = facts.get("plan"), facts.get("resolved") or facts["values"]
    if plan is None:
        return None
    stage, offload_opt, offload_par, buckets = launch_zero(facts, args, facts.get("launch_yaml"))
    world = max(plan.world, int(facts["meta"].get("gpus", 0)))
    targets = str(args.get("lora_target_modules", "all-linear"))
    from minionerec.data.formats import load_sid_index, sid_vocabulary

    index = load_sid_index(facts["values"]["sid_index_path"])
    depth = len(next(iter(index.values()))) + 2  # SID tokens + "\n" + EOS
    rl = facts["script"] == "rl.py"
    beams = (int(args.get("eval_batch_size", 0)) * int(args.get("rank_eval_beams", 0))
             if args.get("rank_eval_on_valid") else 0)
    return Run(world=world, zero_stage=stage, offload_optimizer=offload_opt, offload_params=offload_par,
               lora_r=int(args.get("lora_r", 0)), lora_targets=7 if targets == "all-linear" else len(targets.split(",")),
               train_only_new_tokens=bool(args.get("train_only_new_tokens", False)),
               sid_tokens=len(sid_vocabulary(index)),
               reference=rl and float(args.get("beta", 0)) > 0 and not int(args.get("lora_r", 0)),
               checkpointing=bool(args.get("gradient_checkpointing", False)), micro=plan.micro,
               tokens=plan.max_tokens + (depth if rl else 0), logit_positions=depth + 1,
               rollout_sequences=max(plan.global_batch // world if rl else 0, beams),
               rollout_tokens=plan.max_tokens + depth, bucket_elements=buckets)


def ran(facts: dict, args: dict) -> list[str]:
    """What the recipe turned on and the outputs show ran; an expected output that is missing raises."""
    script, run_dir = facts["script"], facts["run_dir"]
    lines = []
    if script == "evaluate.py":
        return [evaluate_line(facts)] if not facts["dry_run"] else []
    state = json.loads((run_dir / "trainer_state.json").read_text())
    history = state["log_history"]
    if state["global_step"] != args.get("max_steps"):
        raise OutputMissing(f"trainer_state.json ends at step {state['global_step']}, not {args.get('max_steps')}")
    lines.append(f"{state['global_step']} optimizer steps of the recipe's global batch; checkpoint-2 written and the "
                 f"run stopped there, resumed from it (--resume_from_checkpoint true) to step {state['global_step']}")
    stage, offload_opt, offload_par, _ = launch_zero(facts, args)
    if stage:
        where = "sft.py --deepspeed" if script == "sft.py" else f"launch YAML {facts['env'].get('CONFIG')}"
        offload = " with optimizer offload to the CPU" if offload_opt else ""
        lines.append(f"DeepSpeed ZeRO-{stage} ({where}){offload}")
    if int(args.get("lora_r", 0)):
        keys = safetensor_keys(run_dir / "final_checkpoint")
        if any("lora_" in k for k in keys):
            raise OutputMissing("final_checkpoint holds LoRA adapter weights: the merge did not happen")
        lines.append(f"LoRA r{args['lora_r']} on {args.get('lora_target_modules', 'all-linear')} + the SID rows; "
                     "final_checkpoint merged (no adapter weights left)")
    if args.get("gradient_checkpointing"):
        lines.append("activation checkpointing")
    for flag, text in (("packing", "packing"), ("group_by_length", "group_by_length"),
                       ("train_only_new_tokens", "train_only_new_tokens"),
                       ("torch_compile", "torch.compile")):
        if args.get(flag):
            lines.append(text)
    evals = [h for h in history if "eval_loss" in h]
    if script == "sft.py" and args.get("eval_file"):
        if not evals:
            raise OutputMissing("no eval loss was logged although --eval_file is set")
        patience = args.get("early_stopping_patience", 0)
        lines.append(f"eval loss at steps {', '.join(sorted({str(h['step']) for h in evals}))}"
                     + (f"; early stopping (patience {patience}) and the best eval loss's weights at the end"
                        if patience else ""))
    curve = run_dir / "eval_during_training.jsonl"
    if args.get("rank_eval_on_valid"):
        if not curve.is_file():
            raise OutputMissing("rank_eval_on_valid is on but eval_during_training.jsonl is missing")
        steps = [json.loads(line)["step"] for line in curve.read_text().splitlines()]
        lines.append(f"valid ranking (constrained beam search, {args.get('rank_eval_beams')} beams) at steps "
                     f"{', '.join(map(str, steps))}, kept across the resume")
    if args.get("keep_best"):
        lines.append("keep_best: final_checkpoint = the best evaluated weights" + (
            f" (guard.json: step {json.loads((run_dir / 'guard.json').read_text())['chosen_step']})"
            if (run_dir / "guard.json").is_file() else ""))
    if script == "rl.py":
        rollouts = "constrained beam search" if args.get("beam_search", True) else "constrained sampling"
        lines.append(f"GRPO: {rollouts} rollouts, G={args.get('num_generations')}, reward {args.get('reward_type')}, "
                     f"loss {args.get('loss_type') or 'grpo'}" + (f", KL to a reference model (beta {args.get('beta')}"
                     + (", synced" if args.get("sync_ref_model") else "") + ")" if float(args.get("beta", 0)) else ""))
    dtype = json.loads((run_dir / "final_checkpoint" / "config.json").read_text()).get("dtype")
    lines.append(f"final_checkpoint saved in {dtype}")
    if any(p.name.endswith("evaluate") for p in facts["phases"]):
        lines.append(evaluate_line(facts))
    return lines


def safetensor_keys(directory: Path) -> list[str]:
    from safetensors import safe_open

    keys = []
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            keys += list(f.keys())
    return keys


def evaluate_line(facts: dict) -> str:
    """evaluate.sh's metrics row for the rehearsed checkpoint."""
    phase = next(p for p in facts["phases"] if p.name.endswith("evaluate"))
    lines = phase.output.splitlines()
    header = next((line.split() for line in lines if line.startswith("method")), None)
    row = next((line for line in lines if line.startswith("constrained beam search")), None)
    if header is None or row is None:
        raise OutputMissing(f"evaluate printed no metrics table ({phase.log})")
    values = dict(zip(header[1:], row[len("constrained beam search"):].split()))
    return (f"evaluate.sh on it: {values.get('users')} users, NDCG@10 {values.get('NDCG@10', '-')}, "
            f"{values.get('invalid', '-')} invalid (the recipe's evaluate section, through its own pre-check)")


def memory_lines(facts: dict) -> list[str]:
    run = memory_run(facts)
    if run is None:
        return []
    shape = facts["shape"]
    parts = estimate(shape, run)
    shown = " | ".join(f"{k} {v:.1f}" for k, v in parts.items() if k != "total" and v >= 0.05)
    card = facts["meta"].get("gpu_memory_gb")
    verdict = f" ({'fits' if parts['total'] < card else 'does NOT fit'} the recipe's {card} GB)" if card else ""
    lines = [f"{shape.name} ({shape.parameters / 1e9:.2f}B parameters) on {run.world} GPU(s), per GPU, GB: {shown}",
             f"total ~{parts['total']:.1f} GB before the CUDA context and fragmentation (~1-3 GB){verdict}"]
    if run.checkpointing:
        lines.append(f"activations without checkpointing would be {activations_without_checkpointing(shape, run):.1f} "
                     "GB")
    return lines


def report(facts: dict) -> str:
    script, plan = facts["script"], facts.get("plan")
    if facts["node"] != 0:
        return f"[rehearsal] node {facts['node']}: every phase passed; the report is on node 0"
    args = resolved_args(facts)
    env = facts["env"]
    rows = [("launch", f"{env.get('NNODES')} node(s) x {env.get('NPROC')} process(es) = world size "
                       f"{int(env.get('NNODES', 1)) * int(env.get('NPROC', 1))}"
                       + (f", launch YAML {env['CONFIG']}" if script == "rl.py" else ""))]
    if plan is not None:
        unit = "rows" if script == "sft.py" else "completions"
        prompts = f" = {plan.global_batch // plan.generations} prompts x {plan.generations}" if plan.generations else ""
        rows += [("global batch", f"{plan.global_batch:,} {unit}{prompts} per optimizer step = micro {plan.micro} x "
                                  f"{plan.world} process(es) x accumulation {plan.accumulation}"),
                 ("data", f"{env.get('CATEGORY')} ({env.get('DATA_DIR')}): {plan.rows:,} "
                          f"{'rows' if script == 'sft.py' else 'prompts'} -> {plan.steps_per_epoch:,} steps per epoch, "
                          f"{plan.total_steps:,} steps in the recipe's run; {plan.mean_tokens:.0f} tokens on average, "
                          f"{plan.max_tokens} at most (by {facts.get('tokenizer', 'its tokenizer')})")]
    rows += [("ran", line) for line in (ran(facts, args) if not facts["dry_run"] else ["the pre-check (dry run)"])]
    rows += [("substituted", line) for line in facts["notes"]]
    rows += [("memory", line) for line in memory_lines(facts)]
    rows.append(("outputs", f"{facts['run_dir'].parent} (phase logs: {facts['logs']})"))
    width = max(len(k) for k, _ in rows)
    title = f"== rehearsal of {script}: {args.get('recipe') or 'no recipe'}"
    description = facts["meta"].get("description")
    return "\n".join([title + (f" ({description})" if description else "")] +
                     [f"  {k:<{width}}  {v}" for k, v in rows])
