"""Stage 4 — evaluation: constrained beam search over the item catalogue, HR@K and NDCG@K.

    python evaluate.py --base_model out/sft/final_checkpoint --test_file test.csv \
        --sid_index_path X.index.json --result_json out/eval.json
    torchrun --nproc_per_node 8 evaluate.py ...      (see evaluate.sh; N processes = 1 process, exactly)

Writes one JSON list (each test row plus its ranked `predict` SIDs) and prints one metrics table,
with a popularity baseline when --train_file is given.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from transformers import set_seed

from minionerec.data.formats import load_catalogue, load_split
from minionerec.data.prompts import Prompts, check_style, response_text
from minionerec.model.loading import best_dtype, load_model, load_tokenizer
from minionerec.ranking.constrained import build_sid_trie
from minionerec.ranking.evaluation import (auto_batch_size, make_batches, popularity_ranking, predict_batches, shard,
                                           smallest_over_processes)
from minionerec.ranking.metrics import DEFAULT_KS, compute_metrics, format_table, ks_for
from minionerec.run import preflight
from minionerec.run.atomic import atomic_write_text
from minionerec.run.args import RecipeArgs
from minionerec.run.cli import after_checks, run
from minionerec.run.recipe import record_run
from minionerec.run.distributed import gather_to_rank0, init_distributed, teardown_distributed


@dataclass
class Args(RecipeArgs):
    """Evaluate a checkpoint by constrained beam search over every catalogue SID."""

    base_model: str = ""  # model directory (sft.py's final_checkpoint, or any checkpoint with the SID tokens)
    test_file: str = ""  # test CSV in the MiniOneRec format
    sid_index_path: str = ""  # index.json: the catalogue (one of this or --info_file)
    info_file: str = ""  # info txt (sid<TAB>title<TAB>item_id): the catalogue, if no --sid_index_path
    train_file: str = ""  # optional train CSV: adds a most-popular-items baseline row to the table
    result_json: str = "output/eval/predictions.json"  # rows {input, output, predict} as upstream + the CSV columns
    category: str = ""  # dataset name, free text (printed only)
    batch_size: int = 0  # prompts per generate call, per process (each expands to num_beams rows); 0 = auto: 8 on CPU, fill the GPU
    num_beams: int = 50  # also the length of each `predict` list
    max_new_tokens: int = 0  # 0: exactly the answer length (SID tokens + "\n" + EOS)
    length_penalty: float = 0.0  # answers all have one length, so this cannot reorder them
    sample: int = -1  # evaluate the first N test rows; -1 = all
    seed: int = 42  # seeds Python, NumPy and torch (beam search itself is deterministic)
    dtype: str = "auto"  # auto (bf16 on GPUs that support it, else fp32) | float32 | bfloat16 | float16
    # --- prompt protocol
    prompt_style: str = "upstream"  # upstream (EvalSidDataset's prompt, byte for byte) | minionerec (SFT task a's)
    # upstream evaluate.py's flag names; None: accepted and unused (upstream ignores --K too)
    FLAG_ALIASES: ClassVar[dict] = {"test_data_path": "test_file", "result_json_data": "result_json", "K": None}


def check_args(args: Args) -> None:
    """Fail before loading anything heavy."""
    preflight.model_dir(args.base_model, "base_model")
    if Path(args.result_json).is_dir():
        raise SystemExit(f"error: --result_json {args.result_json}: is a directory")
    preflight.writable_dir(str(Path(args.result_json).parent), "result_json")
    preflight.sample_size(args.sample, "sample")
    for flag in ("test_file", "sid_index_path", "info_file", "train_file"):
        path = getattr(args, flag)
        problem = preflight.file_problem(path) if path else None
        if problem:
            raise SystemExit(f"error: --{flag} {problem}: {path}")
    if not args.test_file:
        raise SystemExit("error: --test_file is required")
    if not (args.sid_index_path or args.info_file):
        raise SystemExit("error: give the catalogue with --sid_index_path or --info_file")
    if args.num_beams < 1 or args.batch_size < 0:
        raise SystemExit("error: --num_beams must be >= 1 and --batch_size >= 0 (0 = auto)")
    preflight.checked(check_style, args.prompt_style)
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise SystemExit(f"error: --dtype must be auto, float32, bfloat16 or float16, got {args.dtype!r}")
    preflight.at_least(args.max_new_tokens, "max_new_tokens", 0)
    inputs = {flag: getattr(args, flag) for flag in ("test_file", "train_file", "sid_index_path", "info_file")}
    preflight.output_not_input(args.result_json, "result_json", inputs, {"base_model": args.base_model})


def main(args: Args) -> dict | None:
    check_args(args)
    rank, world_size, device = init_distributed()
    set_seed(args.seed)

    # data: validated before the model loads (every target and history SID must be in the catalogue)
    sid_index = load_catalogue(args.sid_index_path, args.info_file)
    test_df = load_split(args.test_file, sid_index)
    preflight.within_catalogue(args.num_beams, "num_beams", sid_index, args.sid_index_path or args.info_file)
    if args.sample > 0:
        test_df = test_df.iloc[: args.sample].reset_index(drop=True)
    prompts = Prompts(args.prompt_style)
    texts = [prompts.eval_prompt(h) for h in test_df["history_item_sid"]]

    tokenizer = load_tokenizer(args.base_model)
    # before the model loads: a base model without the SID tokens fails in seconds
    trie = preflight.checked(build_sid_trie, sid_index, tokenizer, context=args.base_model)
    if 0 < args.max_new_tokens < trie.depth:
        raise SystemExit(f"error: --max_new_tokens {args.max_new_tokens} is shorter than an answer ({trie.depth} "
                         "tokens): every prediction would be a fragment; use 0 (exactly the answer length)")
    # the popularity baseline's train rows, read now: a bad file fails before the decoding, not after it
    train_sids = list(load_split(args.train_file)["item_sid"]) if args.train_file else None
    preflight.has_weights(args.base_model, "base_model")
    record_run(args, Path(args.result_json).parent, flag="result_json")  # + run_config.yaml beside the predictions
    if args.dry_run:  # every check above passed; no weights were read
        teardown_distributed()
        return None
    dtype = best_dtype() if args.dtype == "auto" else getattr(torch, args.dtype)
    # from here on an error is a bug or a runtime failure: it keeps its traceback (a full disk: one line)
    with after_checks(Path(args.result_json).parent):
        model = load_model(args.base_model, dtype=dtype, device=device).eval()  # straight onto the device
        trie = trie.to(device)

        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        batch_size = args.batch_size or smallest_over_processes(auto_batch_size(
            model.config, next(model.parameters()).element_size(), args.num_beams, max(lengths, default=1) + trie.depth,
            torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None), device)
        my_batches = shard(make_batches(lengths, batch_size), rank, world_size)
        start = time.perf_counter()
        local = predict_batches(model, tokenizer, texts, my_batches, trie, args.num_beams, args.max_new_tokens or None,
                                args.length_penalty, progress=rank == 0)
        elapsed = time.perf_counter() - start
        merged = gather_to_rank0(local, rank, world_size)

        metrics = None
        if rank == 0:
            predictions = [merged[i] for i in range(len(test_df))]
            ks = ks_for(args.num_beams, DEFAULT_KS)
            catalogue = set(trie.sids)
            rows = {"constrained beam search": compute_metrics(predictions, list(test_df["item_sid"]), ks, catalogue)}
            if train_sids is not None:
                popular = popularity_ranking(train_sids, args.num_beams)
                rows["popularity (train)"] = compute_metrics([popular] * len(test_df), list(test_df["item_sid"]), ks,
                                                             catalogue)
            # upstream's row layout first (its calc.py reads `output` and `predict`), then the CSV columns
            records = [{"input": prompts.eval_input(row["history_item_sid"]), "output": response_text(row["item_sid"]),
                        "predict": predicted, **row}
                       for row, predicted in zip(test_df.to_dict(orient="records"), predictions)]
            # temporary sibling + rename: a kill mid-write keeps the previous results whole
            atomic_write_text(args.result_json, json.dumps(records, indent=1, ensure_ascii=False))
            print(f"[evaluate] {args.category or Path(args.test_file).stem}: {len(test_df)} users, "
                  f"{trie.num_sids} distinct SIDs, {args.num_beams} beams, batch {batch_size}, {world_size} process(es), "
                  f"decoding {elapsed:.1f}s (rank 0) -> {args.result_json}")
            print(format_table(rows, ks))
            metrics = rows
    teardown_distributed()  # after the outputs are written: a teardown failure cannot lose them
    return metrics


if __name__ == "__main__":
    run(main, Args)
