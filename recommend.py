"""Recommend: a checkpoint + catalogue + user histories -> the top-K items of each, with scores.

    python recommend.py --base_model out/sft/final_checkpoint --sid_index_path X.index.json \
        --item_meta_path X.item.json --history "12,40,7" --k 10
    python recommend.py ... --history_file users.jsonl --output_format jsonl --output_path recs.jsonl

A history lists item ids or exact titles (oldest first). `--history` takes one or more histories:
items separated by `--item_sep` (","), histories by ";". `--history_file` is JSONL, one history a
line: `{"history": [...], "id": "optional, echoed"}` or a bare JSON list. Prompts and decoding are
evaluate.py's (same beams -> same ranking); the score is the SID path's log-probability.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from minionerec.run.atomic import atomic_write_text
from minionerec.run.cli import run
from minionerec.data.formats import DataError
from minionerec.model.loading import best_dtype, load_model, load_tokenizer
from minionerec.serving.recommender import (Recommendation, Recommender, RequestError, check_model_and_catalogue, load_catalogue,
                                   resolve_device)


@dataclass
class Args:
    """Top-K items for user histories by constrained beam search over the catalogue."""

    base_model: str = ""  # model directory (sft.py / rl.py final_checkpoint)
    sid_index_path: str = ""  # index.json: the recommendable items
    item_meta_path: str = ""  # item.json: titles (output, and histories given by title)
    history: str | tuple = ""  # item ids or titles, "," between items, ";" between histories
    history_file: str = ""  # JSONL: {"history": [...], "id": ...} or a JSON list per line
    item_sep: str = ","  # separator of items inside --history (use "|" for titles with commas)
    k: int = 10  # items per history
    num_beams: int = 50  # beam width (>= k); evaluate.py's default, so rankings match its predictions
    batch_size: int = 8  # histories per beam search call
    max_history: int = 10  # most recent history items in the prompt (the data pipeline's window); 0 = all
    output_format: str = "table"  # table | jsonl
    output_path: str = ""  # "" = stdout; otherwise written atomically
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda if visible) | cpu | cuda[:N]
    seed: int = 42  # seeds Python, NumPy and torch (beam search itself is deterministic)
    prompt_style: str = "upstream"  # the style the checkpoint was trained with (sft.py --prompt_style): upstream | minionerec


def parse_flag_histories(value, item_sep: str) -> list[list[str]]:
    """--history: fire turns "1,2,3" into a tuple and "1" into an int; both mean one history."""
    if isinstance(value, (list, tuple)):
        return [[str(v) for v in value]]
    text = str(value)
    histories = []
    for part in text.split(";"):
        items = [item.strip() for item in part.split(item_sep) if item.strip()]
        histories.append(items)
    return histories


def read_history_file(path) -> tuple[list[list[str]], list]:
    """(histories, ids) from JSONL; one-line error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: --history_file file not found: {path}")
    histories, ids = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: {path}: line {lineno}: invalid JSON ({e.msg})") from None
        history = obj.get("history") if isinstance(obj, dict) else obj
        if not isinstance(history, list):
            raise SystemExit(f"error: {path}: line {lineno}: expected a JSON list or an object with a 'history' list")
        histories.append([str(h) for h in history])
        ids.append(obj.get("id", lineno) if isinstance(obj, dict) else lineno)
    if not histories:
        raise SystemExit(f"error: {path}: no histories")
    return histories, ids


def check_args(args: Args) -> None:
    check_model_and_catalogue(args)
    if bool(args.history != "") == bool(args.history_file):
        raise SystemExit("error: give the histories with exactly one of --history or --history_file")
    if args.num_beams < 1 or args.batch_size < 1 or args.max_history < 0:
        raise SystemExit("error: --num_beams and --batch_size must be >= 1, --max_history >= 0")
    if not 1 <= args.k <= args.num_beams:
        raise SystemExit(f"error: --k must be in 1..--num_beams ({args.num_beams}), got {args.k}")
    if args.output_format not in ("table", "jsonl"):
        raise SystemExit(f"error: --output_format must be table or jsonl, got {args.output_format!r}")
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise SystemExit(f"error: --dtype must be auto, float32, bfloat16 or float16, got {args.dtype!r}")


def format_table(ids: list, histories: list[list[str]], results: list[list[Recommendation]]) -> str:
    lines = []
    for user, history, ranked in zip(ids, histories, results):
        lines.append(f"== {user}: history {', '.join(history)}")
        lines.append(f"{'rank':>4}  {'item_id':<12}{'score':>10}  {'sid':<24}title")
        for rank, rec in enumerate(ranked, 1):
            lines.append(f"{rank:>4}  {rec.item_id:<12}{rec.score:>10.4f}  {rec.sid:<24}{rec.title}")
    return "\n".join(lines) + "\n"


def format_jsonl(ids: list, histories: list[list[str]], results: list[list[Recommendation]]) -> str:
    rows = [{"id": user, "history": history, "recommendations": [r.as_dict() for r in ranked]}
            for user, history, ranked in zip(ids, histories, results)]
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(args: Args) -> list[list[Recommendation]]:
    check_args(args)
    set_seed(args.seed)
    if args.history_file:
        raw, ids = read_history_file(args.history_file)
    else:
        raw = parse_flag_histories(args.history, args.item_sep)
        ids = list(range(len(raw)))

    # catalogue and histories are checked before the model loads
    tokenizer = load_tokenizer(args.base_model)
    device = resolve_device(args.device)
    try:
        catalogue = load_catalogue(args.sid_index_path, args.item_meta_path, tokenizer, device)
        histories = [catalogue.resolve(h, f"history {user}", args.max_history) for user, h in zip(ids, raw)]
    except (DataError, RequestError) as e:
        raise SystemExit(f"error: {e}") from None

    dtype = best_dtype() if args.dtype == "auto" else getattr(torch, args.dtype)
    model = load_model(args.base_model, dtype=dtype).to(device).eval()
    recommender = Recommender(model, tokenizer, catalogue, args.num_beams, args.prompt_style)
    prompt_texts = [catalogue.prompt(h, args.prompt_style) for h in histories]
    results = []
    for start in range(0, len(prompt_texts), args.batch_size):
        chunk = prompt_texts[start:start + args.batch_size]
        results.extend(recommender.decode(chunk, [args.k] * len(chunk), catalogue))

    text = (format_table if args.output_format == "table" else format_jsonl)(ids, histories, results)
    if args.output_path:
        atomic_write_text(args.output_path, text)
        print(f"[recommend] {len(results)} histories, top {args.k} each -> {args.output_path}")
    else:
        print(text, end="")
    return results


if __name__ == "__main__":
    run(main, Args)
