"""Stage 2 — supervised fine-tuning: teach a causal LM to predict the next item's SID.

    python sft.py --base_model DIR --train_file train.csv --eval_file valid.csv \
        --sid_index_path X.index.json --item_meta_path X.item.json --output_dir out/sft
    torchrun --nproc_per_node 8 sft.py ...      (see sft.sh)

Writes `output_dir/final_checkpoint` (model + tokenizer), loadable with AutoModelForCausalLM.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, SchedulerType, Trainer, TrainingArguments, set_seed

from minionerec.data.formats import existing_file, load_item_meta, load_sid_index, load_split, sid_vocabulary
from minionerec.data.packing import PackedCollator
from minionerec.data.prompts import Prompts, check_style, run_category
from minionerec.data import sft_cache
from minionerec.data.sft_tasks import TASKS, AnswerWindowCollator, build_token_datasets, sample_rows
from minionerec.model.lora import apply_lora, check_lora, checkpointing_kwargs, lora_config
from minionerec.model.loading import (add_sid_tokens, best_dtype, cpu_bf16, freeze_all_but_new_rows, load_model,
                                      load_tokenizer, missing_sid_tokens, sid_token_ids, training_dtype)
from minionerec.model.saving import finish_training, stopped
from minionerec.ranking.callback import attach, ranking_callback
from minionerec.ranking.constrained import build_sid_trie
from minionerec.run import prelaunch, preflight
from minionerec.run.args import LoraArgs, RankingEvalArgs, RecipeArgs, RunArgs, report_options, set_wandb_project
from minionerec.run.cli import after_checks, run
from minionerec.run.recipe import is_local_main, record_run
from minionerec.run.distributed import cpu_ddp_backend
from minionerec.run.launch_config import sft_deepspeed, zero_stage
from minionerec.run.plan import sft_plan
from minionerec.run.shared_dir import check_shared_output_dir
from minionerec.run.resume import (NoCheckpointAtLastStep, StopAfterStep, no_partial_checkpoint, resume_point,
                                    whole_run_mean_loss)
from minionerec.run.throughput import ThroughputCallback


ATTENTION = ("sdpa", "flex_attention", "eager")


@dataclass
class Args(RunArgs, RankingEvalArgs, LoraArgs, RecipeArgs):
    """Supervised fine-tuning of a causal LM on SID next-item prediction and alignment tasks."""

    base_model: str = ""  # local model directory (a Qwen2/Llama checkpoint, minionerec.model.pretrained or .tiny output)
    output_dir: str = "output/sft"  # checkpoints, run_config.yaml, trainer_state.json; final_checkpoint/ at the end
    # batch: batch_size is global; accumulation = batch_size / (micro_batch_size * world size)
    batch_size: int = 128  # global rows per optimizer step
    micro_batch_size: int = 4  # rows per process per forward pass
    num_epochs: int = 10  # passes over the training rows (unless --max_steps)
    learning_rate: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW's decoupled decay (not with --train_only_new_tokens, whose frozen rows must not move)
    cutoff_len: int = 512  # longer sequences keep their end (the answer)
    # batches of similar length: ~1.03 padded tokens per real token instead of ~1.39, but each batch is then
    # mostly one task: on the demo, valid NDCG@10 0.1298 grouped vs 0.1702 random after 400 steps
    group_by_length: bool = False  # batches of similar length (see the comment above)
    packing: bool = False  # each micro-batch as one row without padding, same loss (minionerec/data/packing.py)
    # sdpa computes a packed row's masked cross-row pairs too (a dense mask); flex_attention's block mask skips them
    attn_implementation: str = "sdpa"  # sdpa (padding-safe) | flex_attention (CUDA only: no CPU backward) | eager
    # fuses the small ops around the matmuls; the first steps compile (~1 min), each new batch shape recompiles
    torch_compile: bool = False  # torch.compile the model (inductor); the Trainer's own option
    # tasks (upstream sft.py at 81b4ba9 trains all five; later upstream commits dropped d and e)
    task_sid_history: bool = True  # (a) SID history -> next SID
    task_item_alignment: bool = True  # (b) title -> SID and SID -> title
    task_sid_history_title: bool = True  # (c) SID history -> next title
    task_title_history_title: bool = True  # (d) title history -> next title
    task_title_history_sid: bool = True  # (e) title history -> next SID
    # model
    train_only_new_tokens: bool = False  # train only the new SID tokens' rows of the embedding and LM head
    train_from_scratch: bool = False  # base_model's architecture, random weights
    # activations recomputed in the backward pass (as rl.py's flag; transformers' default here is off)
    gradient_checkpointing: bool = False  # saves memory on real models (7B recipes); off is faster on tiny ones
    deepspeed: str = ""  # DeepSpeed JSON (config/sft_zero2.json, sft_zero3.json) or an accelerate YAML naming one
    # evaluation, checkpoints, logging
    eval_steps: float = 200  # eval loss on --eval_file every N steps; < 1: a fraction of all steps
    save_steps: float = 200  # checkpoint every N steps (weights + optimizer state); < 1: a fraction of all steps
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    logging_steps: int = 10  # log the train loss every N steps
    # tokenised rows built once, memory-mapped by every process and later runs: auto = $MINIONEREC_CACHE/sft or
    # ~/.cache/minionerec/sft; "" = none (minionerec/data/sft_cache.py)
    data_cache_dir: str = "auto"  # where the prepared training rows are kept (see above)


def deepspeed_config(path: str) -> str | None:
    """The checked DeepSpeed JSON for TrainingArguments (an accelerate YAML's deepspeed_config_file is followed)."""
    return preflight.checked(sft_deepspeed, path)


def check_args(args: Args, tasks: list[str]) -> None:
    """Every flag, file path and combination that needs no data rows and no weights: fail before loading anything."""
    preflight.model_dir(args.base_model, "base_model")
    preflight.writable_dir(args.output_dir, "output_dir")
    preflight.sample_size(args.sample, "sample")
    preflight.positive_finite(args.learning_rate, "learning_rate")
    preflight.trains_something(args.num_epochs, "num_epochs", args.max_steps)
    if not args.train_file:
        raise SystemExit("error: --train_file is required")
    preflight.ranking_eval_flags(args)
    if not tasks:
        raise SystemExit("error: every --task_* switch is off; enable at least one task")
    if not args.sid_index_path:
        raise SystemExit("error: --sid_index_path is required (its SID tokens are added to the model)")
    if "item_alignment" in tasks and not args.item_meta_path:
        raise SystemExit("error: --task_item_alignment needs --item_meta_path")
    schedules = [t.value for t in SchedulerType]
    if args.lr_scheduler_type not in schedules:
        raise SystemExit(f"error: --lr_scheduler_type {args.lr_scheduler_type!r} is not a transformers schedule; "
                         f"choose from {', '.join(schedules)}")
    if args.weight_decay < 0 or (args.weight_decay and args.train_only_new_tokens):
        raise SystemExit(f"error: --weight_decay must be >= 0, and 0 with --train_only_new_tokens (decay would move the "
                         f"frozen rows), got {args.weight_decay}")
    if args.lora_r > 0 and (args.train_only_new_tokens or args.train_from_scratch):
        raise SystemExit("error: --lora_r > 0 excludes --train_only_new_tokens and --train_from_scratch (LoRA adapts a "
                         "trained base)")
    preflight.one_of(args.attn_implementation, "attn_implementation", ATTENTION)
    if args.packing and args.group_by_length:
        raise SystemExit("error: --group_by_length only saves padding, which --packing has none of; "
                         "set one of them")
    preflight.checked(check_style, args.prompt_style)
    for flag in ("batch_size", "micro_batch_size", "logging_steps"):  # 0 would divide by zero, or log every step
        preflight.at_least(getattr(args, flag), flag, 1)
    for flag in ("eval_steps", "save_steps"):
        preflight.steps(getattr(args, flag), flag)
    preflight.warmup(args.warmup_steps)
    if args.early_stopping_patience > 0 and args.eval_file:
        preflight.best_model_saves(args.eval_steps, args.save_steps)
    preflight.report_to(args.report_to)
    preflight.output_not_input(args.output_dir, "output_dir", {}, {"base_model": args.base_model})
    check_lora(args, args.base_model)


def check_weights(args: Args) -> None:
    """Run last among the checks: run_config.yaml is written right after them."""
    if not args.train_from_scratch:  # from scratch needs the architecture (config.json) only
        preflight.has_weights(args.base_model, "base_model")


@dataclass
class SftData:
    """What SFT reads, loaded and validated before any weights: a bad row fails here."""

    sid_index: dict  # item id -> SID tokens
    sid_tokens: list  # the SID vocabulary (every distinct SID token), added to the tokenizer and the model
    prompts: Prompts
    train: Dataset  # tokenised rows of every enabled task (input_ids, labels), shuffled; memory-mapped when cached
    eval: Dataset | None  # tokenised rows of the SID-history task on the eval split
    eval_df: pd.DataFrame | None  # the eval split's rows, read only for the ranking curve (--rank_eval_on_valid)
    tokenizer_digest: str  # the tokenizer (with SID tokens) the rows were made with


def load_data(args: Args, tasks: list[str], tokenizer) -> SftData:
    """The tokenised rows: read from the data cache (minionerec.data.sft_cache) or built and written to it. Building
    parses and validates the splits and checks --cutoff_len against every answer."""
    sid_index = load_sid_index(args.sid_index_path)
    sid_tokens = sid_vocabulary(sid_index)
    prompts = Prompts(args.prompt_style, run_category(args.category, args.sid_index_path))
    probe = copy.deepcopy(tokenizer)  # the real tokenizer gets the SID tokens together with the model's rows
    probe.add_tokens(missing_sid_tokens(probe, sid_tokens))
    files = {flag: getattr(args, flag) for flag in ("sid_index_path", "item_meta_path", "train_file", "eval_file")}
    for path in filter(None, files.values()):
        existing_file(path)  # before its bytes are hashed: a directory or FIFO is one line, as load_split says it
    inputs = sft_cache.key_inputs(files, probe, tasks=tasks, prompt_style=prompts.style, category=prompts.category,
                                  seed=args.seed, sample=args.sample, cutoff_len=args.cutoff_len)
    split = {}  # the eval split, when this process builds the rows

    def read(path, item_meta=None):
        return sample_rows(load_split(path, sid_index, item_meta), args.sample, args.seed)

    def build(scratch: str | None):
        item_meta = load_item_meta(args.item_meta_path) if args.item_meta_path else None
        answers, tails = set(), set()  # for the --cutoff_len check
        train = build_token_datasets(tasks, read(args.train_file, item_meta), sid_index, item_meta, args.seed,
                                     prompts, args.sample, probe, args.cutoff_len, scratch and f"{scratch}/train",
                                     answers, tails)
        evaluation = None
        if args.eval_file:
            split["eval"] = read(args.eval_file, item_meta)
            evaluation = build_token_datasets(["sid_history"], split["eval"], None, None, 0, prompts, -1, probe,
                                              args.cutoff_len, scratch and f"{scratch}/eval", answers, tails)
        preflight.cutoff_holds_answers(args.cutoff_len, probe, tails, answers)
        return train, evaluation

    prepared = sft_cache.prepare(sft_cache.cache_dir(args.data_cache_dir), inputs, build)
    rank = os.environ.get("RANK", "0")  # every process says whether it built the rows or read them
    print(f"[sft] data (rank {rank}): {len(prepared.train):,} rows {prepared.source} in {prepared.seconds:.1f} s",
          flush=True)
    eval_df = None
    if args.eval_file and args.rank_eval_on_valid:
        eval_df = split["eval"] if "eval" in split else read(args.eval_file)
    return SftData(sid_index=sid_index, sid_tokens=sid_tokens, prompts=prompts, train=prepared.train,
                   eval=prepared.eval, eval_df=eval_df, tokenizer_digest=inputs["tokenizer"])


def training_arguments(args: Args, grad_accum: int, world_size: int, ds_config: str | None,
                       evaluate: bool) -> TrainingArguments:
    """Built before the model loads: under ZeRO-3 its DeepSpeed config makes from_pretrained partition the weights."""
    return TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.micro_batch_size,
        per_device_eval_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=args.num_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        weight_decay=args.weight_decay,  # 0 under train_only_new_tokens (checked): zero grads must mean zero updates
        # --gradient_checkpointing (transformers 5 renamed the field)
        activation_checkpointing=args.gradient_checkpointing,
        activation_checkpointing_kwargs=checkpointing_kwargs(args.lora_r > 0, zero_stage(ds_config))
        if args.gradient_checkpointing else None,
        bf16=best_dtype() == torch.bfloat16,
        use_cpu=cpu_bf16(),  # a CPU rehearsal's bf16 (transformers refuses bf16 without a GPU unless told)
        torch_compile=args.torch_compile,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        eval_strategy="steps" if evaluate else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=args.early_stopping_patience > 0 and evaluate,
        metric_for_best_model="eval_loss",
        logging_steps=args.logging_steps,
        **report_options(args, "sft"),
        deepspeed=ds_config,
        ddp_find_unused_parameters=False,
        seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        logging_nan_inf_filter=False,  # a NaN loss must show in the logs (the filter also syncs every step)
        ddp_backend=cpu_ddp_backend(world_size),
    )


def build_model(args: Args, tokenizer, sid_tokens: list, training_args: TrainingArguments):
    """The base model (+ SID tokens when it lacks them), frozen or LoRA-wrapped as asked. Returns (model, added)."""
    model = load_model(args.base_model, dtype=training_dtype(training_args, lora=args.lora_r > 0),
                       from_scratch=args.train_from_scratch, attn_implementation=args.attn_implementation)
    old_vocab = model.get_input_embeddings().weight.shape[0]
    added = add_sid_tokens(model, tokenizer, sid_tokens)
    if args.train_only_new_tokens:
        freeze_all_but_new_rows(model, first_new_row=len(tokenizer) - added if added else old_vocab,
                                stop_row=len(tokenizer))
    if args.lora_r > 0:
        model = apply_lora(model, lora_config(args, sid_token_ids(tokenizer, sid_tokens), model))
    return model, added


def build_trainer(args: Args, model, tokenizer, data: SftData, training_args: TrainingArguments):
    """Tokenised datasets, callbacks (early stopping, throughput, ranking curve, --stop_after_step) and the Trainer.
    Returns (trainer, ranking callback or None, throughput callback, stop callback)."""
    if sft_cache.tokenizer_digest(tokenizer) != data.tokenizer_digest:  # the rows' token ids are this tokenizer's
        raise RuntimeError("the tokenizer with its SID tokens differs from the one the training rows were made with")
    train_ds, eval_ds = data.train, data.eval
    callbacks = ([EarlyStoppingCallback(args.early_stopping_patience)]
                 if args.early_stopping_patience > 0 and eval_ds is not None else [])
    throughput = ThroughputCallback(model, output_dir=args.output_dir)
    callbacks.append(throughput)
    ranking = None
    if args.rank_eval_on_valid:
        prompts = [data.prompts.eval_prompt(h) for h in data.eval_df["history_item_sid"]]
        ranking = ranking_callback(args, prompts, list(data.eval_df["item_sid"]), tokenizer,
                                   trie=build_sid_trie(data.sid_index, tokenizer, device=training_args.device))
        callbacks.append(ranking)
    stop = StopAfterStep(args.stop_after_step)
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        # left padding + logits at the answer window only: same loss as full logits (test_sft_tasks_collator.py);
        # packed: the same loss, gradients and steps without the padding (test_packing.py)
        data_collator=PackedCollator() if args.packing else AnswerWindowCollator(tokenizer.pad_token_id),
        processing_class=tokenizer, callbacks=[*callbacks, NoCheckpointAtLastStep(), stop],  # final_checkpoint: the end save
    )
    attach(trainer, ranking)
    return trainer, ranking, throughput, stop


def report(trainer: Trainer, mean_loss: float, eval_loss: float | None, throughput: ThroughputCallback,
           final_dir: Path) -> None:
    """The end-of-run summary lines (main process)."""
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]  # none when steps < logging_steps
    first_part = f" first_train_loss={logged[0]:.4f}" if logged else ""
    eval_part = f" eval_loss={eval_loss:.4f}" if eval_loss is not None else ""
    print(f"[sft] done: steps={trainer.state.global_step}{first_part} mean_train_loss={mean_loss:.4f}{eval_part} "
          f"-> {final_dir}")
    if throughput.result:
        mfu = throughput.result["mfu"]
        print(f"[sft] throughput: {throughput.result['tokens_per_s']:,.0f} tokens/s over "
              f"{throughput.result['timed_steps']} steps, {throughput.result['tflops_per_gpu']} TFLOP/s per process"
              + (f", MFU {mfu:.1%}" if mfu is not None else "") + f" ({throughput.result['device']})")


def main(args: Args) -> Trainer | None:
    # checks and data: bad input fails here, before any weights load
    tasks = [t for t in TASKS if getattr(args, f"task_{t}")]
    check_args(args, tasks)
    resume, first_step = resume_point(args, "base_model", "sft")  # the newest complete checkpoint, and its step
    ds_config = deepspeed_config(args.deepspeed)
    world_size = prelaunch.world_size()  # WORLD_SIZE, or the world a launcher is about to start
    grad_accum = preflight.gradient_accumulation(args.batch_size, args.micro_batch_size, world_size)
    set_seed(args.seed)
    tokenizer = load_tokenizer(args.base_model)
    data = load_data(args, tasks, tokenizer)
    check_weights(args)
    if args.attn_implementation == "flex_attention" and not torch.cuda.is_available():
        raise SystemExit("error: --attn_implementation flex_attention trains on CUDA only (torch has no CPU backward "
                         "for it); use sdpa here")
    record_run(args, args.output_dir)  # prints each value + source; writes output_dir/run_config.yaml
    if is_local_main():
        print(sft_plan(len(data.train), args.micro_batch_size, grad_accum, world_size, args.num_epochs,
                       args.max_steps, sft_cache.token_counts(data.train)).line(), flush=True)
    if args.dry_run:  # every check above passed; no weights were read
        return None
    set_wandb_project(args)
    training_args = training_arguments(args, grad_accum, world_size, ds_config, evaluate=data.eval is not None)

    # from here on an error is a bug or a runtime failure: it keeps its traceback (a full disk: one line)
    with after_checks(args.output_dir):
        model, added = build_model(args, tokenizer, data.sid_tokens, training_args)
        # ZeRO-3 leaves each rank an empty placeholder per parameter: ds_numel is the full size
        trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
        print(f"[sft] tasks={tasks} prompt_style={args.prompt_style} added_sid_tokens={added} "
              f"trainable_params={trainable:,} grad_accum={grad_accum} world_size={world_size} "
              f"trainer_world_size={training_args.world_size}")
        trainer, ranking, throughput, stop = build_trainer(args, model, tokenizer, data, training_args)
        check_shared_output_dir(args.output_dir)  # several nodes: one output_dir they all see
        with no_partial_checkpoint(trainer):
            result = trainer.train(resume_from_checkpoint=resume)
        if stop.stopped:
            return stopped(trainer, "sft")
        # the whole run's mean loss, also after a resume (Transformers averages only this process's steps)
        mean_loss = whole_run_mean_loss(trainer.state.log_history, result.training_loss, first_step,
                                        trainer.state.global_step)
        eval_loss = trainer.evaluate()["eval_loss"] if data.eval is not None else None  # collective: all ranks
        # --keep_best: early stopping on the ranking curve
        finish_training(trainer, tokenizer, args.output_dir, ranking, start_dir=None, script="sft",
                        report=lambda final: report(trainer, mean_loss, eval_loss, throughput, final))
    return trainer


if __name__ == "__main__":
    run(main, Args)
