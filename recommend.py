"""Recommend: a checkpoint + catalogue + user histories -> the top-K items of each, with scores.

    python recommend.py --base_model out/sft/final_checkpoint --sid_index_path X.index.json \
        --item_meta_path X.item.json --history "12,40,7" --k 10
    python recommend.py ... --history_file users.jsonl --output_format jsonl --output_path recs.jsonl

A history lists item ids or exact titles (oldest first). `--history` takes one or more histories:
items separated by `--item_sep` (","), histories by ";". `--history_file` is JSONL, one history a
line: `{"history": [...], "id": "optional, echoed"}` or a bare JSON list. Ids are text as typed: `--history 0x1A`
is the item "0x1A" (fire alone would make it 26; see verbatim_flags). Prompts and decoding are
evaluate.py's (same beams -> same ranking); the score is the SID path's log-probability.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from minionerec.run import preflight
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
    train_path: str = ""  # train CSV: of items sharing a SID, show the most frequent next item; "" = the first
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


TEXT_FLAGS = ("history", "item_sep")  # read verbatim: fire would turn 0x1A into 26, 1_2 into 12, 1e3 into 1000.0


def verbatim_flags(argv: list[str], names=TEXT_FLAGS) -> list[str]:
    """The command line with the values of `names` quoted as Python string literals, so that fire (which reads
    every value as a Python literal) passes them on exactly as typed: `--history 0x1A` stays "0x1A"."""
    spellings = {f"{dashes}{spelling}" for name in names for spelling in {name, name.replace("_", "-")}
                 for dashes in ("-", "--")}
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":  # fire's own flags follow
            out.extend(argv[i:])
            break
        flag, eq, value = arg.partition("=")
        if flag in spellings and eq:
            out.append(f"{flag}={value!r}")
        elif flag in spellings and i + 1 < len(argv) and not re.match(r"--|-[a-zA-Z]", argv[i + 1]):
            out.append(f"{flag}={argv[i + 1]!r}")  # fire's rule: the next argument is the value unless a flag
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def parse_flag_histories(value, item_sep: str) -> list[list[str]]:
    """--history: items separated by `item_sep`, histories by ";" (a list or tuple of ids: one history). The
    values are text as typed (verbatim_flags); a number here came from a recipe or a caller, where 0x1A and 26
    can no longer be told apart, so it is refused."""
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise SystemExit(f"error: --history: item {bad[0]!r} is not text; give item ids as strings")
        return [[v.strip() for v in value if v.strip()]]
    if not isinstance(value, str):
        raise SystemExit(f"error: --history must be text (item ids or titles), got {value!r}; quote it")
    text = value
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
    preflight.device(args.device)
    if not isinstance(args.item_sep, str) or not args.item_sep or args.item_sep == ";":
        raise SystemExit(f"error: --item_sep must be a non-empty separator other than ';', got {args.item_sep!r}")


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
        catalogue = load_catalogue(args.sid_index_path, args.item_meta_path, tokenizer, device, args.train_path)
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
    sys.argv[1:] = verbatim_flags(sys.argv[1:])
    run(main, Args)
