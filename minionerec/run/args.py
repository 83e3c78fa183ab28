"""Flags shared by the training scripts, declared once: sft.py's and rl.py's `Args` inherit these groups (TRL's
ModelConfig / ScriptArguments style; evaluate.py takes RecipeArgs), and a script redefines a field only where its
default differs. --help lists the inherited fields first, group by group (minionerec.run.flags.usage).

The set-up both scripts do with these flags lives in one place each: the logging service here (report_options,
set_wandb_project), the CPU process-group backend in minionerec.run.distributed.cpu_ddp_backend, the resume point in
minionerec.run.resume.resume_point, the ranking-evaluation checks in minionerec.run.preflight.ranking_eval_flags, the
LoRA check in minionerec.model.lora.check_lora, the ranking callback in minionerec.ranking.callback (ranking_callback,
attach) and the end of the run in minionerec.model.saving.finish_training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class RecipeArgs:
    """The run itself (sft.py, rl.py, evaluate.py): never read from a recipe."""

    recipe: str = ""  # recipe YAML (recipes/*.yaml, the script's section); precedence: defaults < recipe < command line
    dry_run: bool = False  # check flags, recipe, files, data rows, tokenizer, batch sizes, outputs; load no weights, write nothing


@dataclass
class RunArgs:
    """Data, schedule, checkpoints and logging of sft.py and rl.py."""

    train_file: str = ""  # train CSV in the MiniOneRec format
    eval_file: str = ""  # valid CSV: sft.py's eval loss and the ranking evaluation (--rank_eval_on_valid); "" = none
    sid_index_path: str = ""  # index.json: every item's SID (sft.py adds its tokens; rl.py generates only these SIDs)
    item_meta_path: str = ""  # item.json: titles for the tasks that read them (title -> SID, title histories)
    category: str = ""  # dataset name: run names and upstream prompts' category; "" = --sid_index_path's file name
    sample: int = -1  # at most this many rows (RL: prompts) of each task and of --eval_file (seeded), as upstream; -1 = all
    seed: int = 42  # data sampling and order, new rows' init, rollouts (transformers.set_seed)
    max_steps: int = -1  # > 0 overrides the epoch count (smoke tests, small budgets)
    warmup_steps: float = 0.03  # < 1: a fraction of all steps (warmup ratio); >= 1: a step count
    lr_scheduler_type: str = "cosine"  # any transformers schedule: cosine, linear, constant_with_warmup, ...
    save_total_limit: int = 2  # checkpoints kept in output_dir, the oldest go first (each: weights + optimizer state)
    resume_from_checkpoint: str = ""  # a checkpoint dir, or "true" for the latest in output_dir
    stop_after_step: int = 0  # > 0: end after this step with a checkpoint (schedule unchanged); resume continues it
    report_to: str = "none"  # none | wandb | tensorboard (wandb works offline with WANDB_MODE=offline)
    wandb_project: str = ""  # --report_to wandb: the project (sets WANDB_PROJECT)
    wandb_run_name: str = ""  # the run name; "" = <script>-<category>, e.g. sft-Industrial_and_Scientific
    prompt_style: str = "upstream"  # upstream (AkaliKong/MiniOneRec's texts, byte for byte) | minionerec (docs/pipeline.md)


@dataclass
class RankingEvalArgs:
    """In-training ranking evaluation: valid HR@K / NDCG@K by constrained beam search, as evaluate.py ranks."""

    rank_eval_on_valid: bool = False  # rank --eval_file's rows during training; logged and written to eval_during_training.jsonl
    rank_eval_every: float = 0.1  # evaluate every N steps; < 1: a fraction of all steps
    rank_eval_beams: int = 20  # beams = ranked list length for HR@K / NDCG@K
    eval_sample: int = 500  # valid rows per evaluation, a fixed seeded sample (-1: all)
    eval_batch_size: int = 32  # prompts per beam-search call
    # sft.py: early stopping on the ranking curve; rl.py: never worse than the SFT weights, which it scores at step 0
    keep_best: bool = False  # needs --rank_eval_on_valid: final_checkpoint = the evaluated weights with the best NDCG@10


@dataclass
class LoraArgs:
    """LoRA (peft): adapters on the linear layers + the SID rows of embedding and LM head, merged into final_checkpoint
    (rl.py's reference model is the policy with its adapters disabled)."""

    lora_r: int = 0  # adapter rank; 0 = off (full fine-tuning)
    lora_alpha: int = 32  # scale alpha / r of the adapter update
    lora_dropout: float = 0.05  # dropout on the adapter input
    lora_target_modules: str = "all-linear"  # all-linear, or comma-separated names, e.g. q_proj,k_proj,v_proj,o_proj


def report_options(args, script: str) -> dict:
    """TrainingArguments / GRPOConfig's `report_to` and `run_name` from --report_to and --wandb_run_name."""
    return dict(report_to=[] if args.report_to == "none" else [args.report_to],
                run_name=args.wandb_run_name or f"{script}-{args.category or 'minionerec'}")


def set_wandb_project(args) -> None:
    """--report_to wandb --wandb_project P: WANDB_PROJECT=P for the Trainer's wandb integration (a value already in
    the environment wins)."""
    if args.report_to == "wandb" and args.wandb_project:
        os.environ.setdefault("WANDB_PROJECT", args.wandb_project)
