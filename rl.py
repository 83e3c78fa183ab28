"""Stage 3 — GRPO reinforcement learning from an SFT checkpoint, with constrained SID generation.

    python rl.py --model_path out/sft/final_checkpoint --train_file train.csv --eval_file valid.csv \
        --sid_index_path X.index.json --item_meta_path X.item.json --output_dir out/rl
    accelerate launch --config_file config/zero2_opt.yaml --num_processes 8 rl.py ...   (see rl.sh)

Writes `output_dir/final_checkpoint` (model + tokenizer) and TRL checkpoints under output_dir.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from transformers import set_seed

from minionerec.data.formats import load_info, load_item_meta, load_sid_index, load_split, sid_vocabulary
from minionerec.data.prompts import Prompts, check_style, run_category
from minionerec.data.rl_tasks import build_eval_dataset, build_rl_dataset
from minionerec.data.sft_tasks import sample_rows
from minionerec.model.lora import check_lora, lora_config
from minionerec.model.loading import (best_dtype, cpu_bf16, load_model, load_tokenizer, missing_sid_tokens, sid_token_ids,
                                      training_dtype)
from minionerec.model.saving import finish_training, stopped
from minionerec.ranking.callback import attach, ranking_callback
from minionerec.rl.rewards import (PREFIX_WEIGHTS, build_reward_funcs, check_reward_type, parse_prefix_weights,
                                   parse_reward_weights, reward_files, reward_options)
from minionerec.rl.trainer import MiniOneRecGRPOConfig, MiniOneRecGRPOTrainer, grpo_loss_options
from minionerec.run import prelaunch, preflight
from minionerec.run.args import LoraArgs, RankingEvalArgs, RecipeArgs, RunArgs, report_options, set_wandb_project
from minionerec.run.cli import after_checks, run
from minionerec.run.recipe import is_local_main, record_run
from minionerec.run.distributed import cpu_ddp_backend
from minionerec.run.plan import rl_plan, token_lengths
from minionerec.run.shared_dir import check_shared_output_dir
from minionerec.run.resume import NoCheckpointAtLastStep, StopAfterStep, no_partial_checkpoint, resume_point


PER_PROCESS_BATCH = ("was per process; rl.py's batch is global now, as sft.py's: write batch_size = completions per "
                     "optimizer step over all processes (old train_batch_size x gradient_accumulation_steps x "
                     "processes, e.g. 64 x 2 x 8 = 1024) and micro_batch_size = completions per process per pass (old "
                     "train_batch_size); the accumulation follows from the world size")


@dataclass
class Args(RunArgs, RankingEvalArgs, LoraArgs, RecipeArgs):
    """GRPO on SID next-item prediction with constrained beam search rollouts."""

    model_path: str = ""  # SFT checkpoint directory (model + tokenizer holding the SID tokens)
    info_file: str = ""  # optional info txt; checked against the SID index
    output_dir: str = "output/rl"  # checkpoints, run_config.yaml, trainer_state.json; final_checkpoint/ at the end
    # batch: batch_size is global, as sft.py's; accumulation = batch_size / (micro_batch_size x world size)
    batch_size: int = 64  # completions per optimizer step over all processes (= prompts x num_generations)
    micro_batch_size: int = 32  # completions per process per forward / backward pass
    num_generations: int = 16  # group size G: completions per prompt
    num_train_epochs: int = 1  # passes over the prompts (unless --max_steps)
    learning_rate: float = 1e-6  # AdamW peak learning rate
    beta: float = 0.04  # KL weight to the reference model (0 = no reference model)
    sync_ref_model: bool = False  # TRL: move the reference towards the policy every 512 steps
    # rollouts
    beam_search: bool = True  # True: constrained beam search; False: constrained sampling
    temperature: float = 1.0  # sampling temperature (beam_search=False)
    dynamic_sampling: bool = False  # sampling only: oversample 1.5x, keep target + most frequent
    add_gt: bool = False  # put the ground-truth SID into groups that lack it
    mask_all_zero: bool = False  # drop groups whose rewards are all zero from the loss
    # loss and rewards
    reward_type: str = "rule"  # rule | ranking | ranking_only | prefix | semantic | sasrec, or several joined by "+"
    prefix_reward_weights: str = PREFIX_WEIGHTS  # prefix reward: credit when the first 1, 2, ... SID levels match
    dapo: bool = False  # TRL loss_type="dapo": average over all tokens of the batch (or give --loss_type)
    gspo: bool = False  # TRL importance_sampling_level="sequence"
    item_embeddings_path: str = ""  # semantic reward: .npy item embeddings [n_items, D], index.json order
    sasrec_path: str = ""  # sasrec reward: sasrec.py's sasrec.pt (minionerec.ranking.sasrec.save_sasrec)
    # data
    sample_train: bool = False  # keep the last 80% of the shuffled prompts (upstream)
    title2sid: bool = True  # title -> SID prompts for every item (off when SFT never trained titles)
    title_history_sample: int = 10000  # title history -> SID rows (-1: all, 0: task off)
    # in-training ranking evaluation: upstream's interval (~5 evaluations a run)
    rank_eval_every: float = 0.199  # evaluate every N steps; < 1: a fraction of all steps
    # checkpoints, logging
    save_steps: float = 0.1  # < 1: a fraction of all steps
    gradient_checkpointing: bool = True  # TRL's default: saves memory on real models; off is faster on tiny ones
    logging_steps: int = 1  # log rewards, KL and loss every N steps
    # --- GRPOConfig's own fields (same names, passed straight through)
    # TRL's default is False: rollouts, old and reference log-probs would come from a model with dropout on (KL > 0
    # before any update); our trainer also zeroes the attention dropout TRL leaves on (MiniOneRecGRPOTrainer)
    disable_dropout: bool = True  # no dropout in the policy, its rollouts and the reference model
    max_grad_norm: float = 0.3  # gradient clipping
    epsilon: float = 0.2  # clip range of the importance ratio
    epsilon_high: float = 0.0  # upper clip (DAPO's clip-higher, e.g. 0.28); 0 = epsilon
    num_iterations: int = 1  # optimisation passes over each generated batch (GRPO's mu)
    scale_rewards: str = "group"  # group | batch | none: the std that normalises advantages
    loss_type: str = ""  # grpo | dapo | dr_grpo | bnpo | ... (TRL); "" = grpo, or dapo with --dapo true
    reward_weights: str = ""  # "+"-joined weights, one per reward function of --reward_type; "" = 1 each
    # per-process batch flags of earlier versions: an error that translates them (a recipe means one run at any size)
    REMOVED_FLAGS: ClassVar[dict] = {name: PER_PROCESS_BATCH for name in ("train_batch_size", "gradient_accumulation_steps")}


# rl.py flags whose GRPOConfig field has another name or another form; every other shared name passes through
MAPPED = {"batch_size", "micro_batch_size", "sample", "report_to", "resume_from_checkpoint", "loss_type", "epsilon_high",
          "reward_weights"}


def grpo_config(args: Args, world_size: int, started: int) -> MiniOneRecGRPOConfig:
    """The trainer config: the reward weights and loss options are parsed here, and TRL's own validation runs,
    before any weights load. world_size: the run's processes (the accumulation follows from it); started: the
    processes running now (a launcher's one-process pre-check has no process group to set up)."""
    grpo_fields = {f.name for f in dataclasses.fields(MiniOneRecGRPOConfig)}
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
            if f.name in grpo_fields and f.name not in MAPPED}
    return MiniOneRecGRPOConfig(
        **same,
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=preflight.gradient_accumulation(args.batch_size, args.micro_batch_size, world_size),
        epsilon_high=args.epsilon_high or None,
        reward_weights=parse_reward_weights(args.reward_weights, check_reward_type(args.reward_type)),
        **grpo_loss_options(args.dapo, args.gspo, args.loss_type),
        bf16=best_dtype() == torch.bfloat16,
        use_cpu=cpu_bf16(),  # a CPU rehearsal's bf16 (transformers refuses bf16 without a GPU unless told)
        save_strategy="steps",
        log_completions=True,  # also writes output_dir/completions/*.parquet
        num_completions_to_print=1,
        **report_options(args, "rl"),
        dataloader_num_workers=0,
        ddp_backend=cpu_ddp_backend(started),
    )


def check_args(args: Args, world_size: int) -> None:
    """Fail before loading the model: paths, exclusive options, batch divisibility (the reward weights and loss
    options: when grpo_config builds the config)."""
    preflight.model_dir(args.model_path, "model_path")
    preflight.writable_dir(args.output_dir, "output_dir")
    preflight.positive_finite(args.learning_rate, "learning_rate")
    preflight.trains_something(args.num_train_epochs, "num_train_epochs", args.max_steps)
    for flag in ("train_file", "sid_index_path"):
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    if args.sync_ref_model and args.beta == 0:
        raise SystemExit("error: --sync_ref_model needs --beta > 0 (with beta 0 there is no reference model)")
    if args.lora_r > 0 and args.sync_ref_model:
        raise SystemExit("error: --lora_r > 0 needs --sync_ref_model false (the paper recipes set it true): the LoRA reference "
                         "is the base model with adapters disabled, fixed by construction")
    preflight.ranking_eval_flags(args)
    preflight.checked(check_style, args.prompt_style)
    preflight.checked(check_reward_type, args.reward_type)
    for flag, path in reward_files(args).items():  # the files the registry's entries read (rewards.REWARDS)
        if not (path and Path(path).is_file()):
            raise SystemExit(f"error: --reward_type {args.reward_type} needs --{flag} (an existing file), got {path!r}")
    preflight.sample_size(args.sample, "sample")
    for flag in ("batch_size", "micro_batch_size", "logging_steps",
                 "num_iterations"):  # 0 would divide by zero, or train / evaluate on nothing, silently
        preflight.at_least(getattr(args, flag), flag, 1)
    preflight.steps(args.save_steps, "save_steps")
    preflight.warmup(args.warmup_steps)
    preflight.at_least(args.beta, "beta", 0)  # a negative KL weight rewards drifting from the reference
    if not args.beam_search:
        preflight.positive_finite(args.temperature, "temperature")  # sampling divides the logits by it
    preflight.one_of(args.scale_rewards, "scale_rewards", ("group", "batch", "none"))
    preflight.report_to(args.report_to)
    preflight.output_not_input(args.output_dir, "output_dir", {}, {"model_path": args.model_path})
    G = args.num_generations
    if G < 2:
        raise SystemExit(f"error: --num_generations must be >= 2 (GRPO compares completions), got {G}")
    preflight.gradient_accumulation(args.batch_size, args.micro_batch_size, world_size)
    if args.batch_size % (G * world_size):
        # Each process generates whole groups: beam search needs all G copies of a prompt together.
        raise SystemExit(f"error: --batch_size {args.batch_size} must be a multiple of --num_generations {G} x "
                         f"{world_size} processes (each process generates whole groups of {G})")
    check_lora(args, args.model_path)


def check_data(args: Args, sid_index: dict) -> None:
    """The catalogue holds a group of G (and --rank_eval_beams) distinct SIDs; --prefix_reward_weights has one weight
    per SID level; --info_file names no SID outside it."""
    preflight.within_catalogue(args.num_generations, "num_generations", sid_index, args.sid_index_path)
    if args.rank_eval_on_valid:
        preflight.within_catalogue(args.rank_eval_beams, "rank_eval_beams", sid_index, args.sid_index_path)
    if "prefix" in check_reward_type(args.reward_type):  # one weight per SID level of this index
        preflight.checked(parse_prefix_weights, args.prefix_reward_weights, len(next(iter(sid_index.values()))))
    if args.info_file:
        unknown = {sid for sid, _, _ in load_info(args.info_file)} - {"".join(s) for s in sid_index.values()}
        if unknown:
            raise SystemExit(f"error: {args.info_file}: {len(unknown)} SID(s) not in {args.sid_index_path}")


def load_datasets(args: Args, sid_index: dict):
    """(train prompts, eval prompts or None) as TRL datasets: prompt, target, ..."""
    item_meta = load_item_meta(args.item_meta_path) if args.item_meta_path else None
    prompts = Prompts(args.prompt_style, run_category(args.category, args.sid_index_path))
    train_ds = build_rl_dataset(load_split(args.train_file, sid_index), sid_index, item_meta, args.title_history_sample,
                                args.seed, args.sample_train, args.title2sid, prompts, args.sample)
    eval_df = sample_rows(load_split(args.eval_file, sid_index), args.sample, args.seed) if args.eval_file else None
    eval_ds = build_eval_dataset(eval_df, prompts) if eval_df is not None else None
    return train_ds, eval_ds


def load_sft_tokenizer(args: Args, sid_tokens: list):
    """The SFT checkpoint's tokenizer, which must already speak every SID; left padding for generation."""
    tokenizer = load_tokenizer(args.model_path)
    missing = missing_sid_tokens(tokenizer, sid_tokens)
    if missing:
        raise SystemExit(f"error: {args.model_path} lacks {len(missing)} SID token(s) (e.g. {missing[0]}); "
                         "RL starts from an SFT checkpoint trained with this --sid_index_path")
    tokenizer.padding_side = "left"
    return tokenizer


def build_trainer(args: Args, config: MiniOneRecGRPOConfig, tokenizer, sid_index: dict, sid_tokens: list,
                  reward_funcs, train_ds, eval_ds):
    """Policy (+ LoRA), the in-training evaluation and TRL's trainer. Returns (trainer, ranking callback or None,
    stop callback).

    The model loads after the config: under ZeRO-3 its DeepSpeed config makes from_pretrained partition the weights
    (policy here, reference in TRL). With beta > 0 and no LoRA, TRL reloads the reference model from
    model.config._name_or_path in the policy's dtype: keep it a directory. With LoRA the reference is the same
    model with its adapters disabled (TRL's peft path): no second copy."""
    model = load_model(args.model_path, dtype=training_dtype(config, lora=args.lora_r > 0))
    peft_config = lora_config(args, sid_token_ids(tokenizer, sid_tokens), model)
    stop = StopAfterStep(args.stop_after_step)
    callbacks = [NoCheckpointAtLastStep(), stop]  # final_checkpoint: the end save
    ranking = None
    if args.rank_eval_on_valid:  # the guard (--keep_best) scores the SFT weights at step 0 too
        ranking = ranking_callback(args, eval_ds["prompt"], eval_ds["target"], tokenizer, score_start=args.keep_best)
        callbacks.append(ranking)
    trainer = MiniOneRecGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=config, train_dataset=train_ds, processing_class=tokenizer,
        callbacks=callbacks, peft_config=peft_config, sid_index=sid_index,
    )
    attach(trainer, ranking)
    return trainer, ranking, stop


def report(trainer, final_dir) -> None:
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(f"[rl] done: steps={trainer.state.global_step} mean_reward={sum(rewards) / max(len(rewards), 1):.4f} "
          f"-> {final_dir}")


def main(args: Args):
    # checks and data: bad input fails here, before any weights load
    world_size = prelaunch.world_size()  # WORLD_SIZE, or the world a launcher is about to start
    check_args(args, world_size)
    resume, _ = resume_point(args, "model_path", "rl")  # the newest complete checkpoint
    set_seed(args.seed)
    sid_index = load_sid_index(args.sid_index_path)
    sid_tokens = sid_vocabulary(sid_index)
    check_data(args, sid_index)
    train_ds, eval_ds = load_datasets(args, sid_index)
    tokenizer = load_sft_tokenizer(args, sid_tokens)
    preflight.has_weights(args.model_path, "model_path")
    # before the model: a reward file of another catalogue (rows != items) fails in seconds; the weights are
    # --reward_weights, in the config
    reward_funcs = build_reward_funcs(args.reward_type, args.num_generations, sid_index, tokenizer,
                                      **reward_files(args), **reward_options(args))
    set_wandb_project(args)
    # + TRL's own checks; the processes started now (a launcher's one-process pre-check has no group to set up)
    config = preflight.checked(grpo_config, args, world_size, int(os.environ.get("WORLD_SIZE", 1)))
    record_run(args, args.output_dir)  # prints each value + source; writes output_dir/run_config.yaml
    if is_local_main():
        print(rl_plan(len(train_ds), config.per_device_train_batch_size, config.gradient_accumulation_steps, world_size,
                      args.num_generations, args.num_iterations, args.num_train_epochs, args.max_steps,
                      token_lengths(tokenizer, train_ds[:]["prompt"])).line(), flush=True)
    if args.dry_run:  # every check above passed; no weights were read
        return None

    # from here on an error is a bug or a runtime failure: it keeps its traceback (a full disk: one line)
    with after_checks(args.output_dir):
        trainer, ranking, stop = build_trainer(args, config, tokenizer, sid_index, sid_tokens, reward_funcs, train_ds,
                                               eval_ds)
        if trainer.is_world_process_zero():
            print(f"[rl] prompts={len(train_ds)} world_size={config.world_size} "
                  f"distributed={trainer.accelerator.distributed_type} reward={args.reward_type} "
                  f"loss_type={config.loss_type} importance_sampling_level={config.importance_sampling_level}")
        check_shared_output_dir(args.output_dir)  # several nodes: one output_dir they all see
        with no_partial_checkpoint(trainer):
            trainer.train(resume_from_checkpoint=resume)
        if stop.stopped:
            return stopped(trainer, "rl")
        tokenizer.padding_side = "right"  # as the SFT checkpoint saved it
        finish_training(trainer, tokenizer, args.output_dir, ranking, start_dir=args.model_path, script="rl",
                        report=lambda final: report(trainer, final))
    return trainer


if __name__ == "__main__":
    run(main, Args)
