"""Serve recommendations over HTTP (FastAPI + uvicorn) from one checkpoint.

    python serve.py --base_model out/sft/final_checkpoint --sid_index_path X.index.json \
        --item_meta_path X.item.json --port 8000 --num_beams 50

    POST /recommend          {"history": ["12", "40"], "k": 10} -> {"items": [{rank, item_id, title, sid, score}]}
    GET  /health             catalogue size, beam limit, batching counters
    POST /catalogue/reload   {"sid_index_path": "...", "item_meta_path": "..."}: swap the catalogue atomically

Concurrent requests are batched into one constrained beam search (up to --max_batch_size, waiting at
most --max_wait_ms for company). Bad input (unknown item, empty history, k above --num_beams) is a
422 JSON error `{"error": ..., "field": ...}`.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import set_seed

from minionerec.run.cli import run
from minionerec.data.formats import DataError
from minionerec.serving.recommender import check_model_and_catalogue


@dataclass
class Args:
    """HTTP recommendation server: constrained beam search behind POST /recommend."""

    base_model: str = ""  # model directory (sft.py / rl.py final_checkpoint)
    sid_index_path: str = ""  # index.json: the recommendable items (swap later with /catalogue/reload)
    item_meta_path: str = ""  # item.json: titles (responses, and histories given by title)
    host: str = "127.0.0.1"  # 0.0.0.0 to listen on every interface
    port: int = 8000  # TCP port to listen on (1..65535)
    num_beams: int = 50  # beam width for every request = the largest k served
    max_batch_size: int = 8  # requests per beam search call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_history: int = 10  # most recent history items in the prompt (the data pipeline's window); 0 = all
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda if visible) | cpu | cuda[:N]
    log_level: str = "warning"  # uvicorn's: critical | error | warning | info | debug
    seed: int = 42  # seeds Python, NumPy and torch (beam search itself is deterministic)
    prompt_style: str = "upstream"  # the style the checkpoint was trained with (sft.py --prompt_style): upstream | minionerec


def check_args(args: Args) -> None:
    check_model_and_catalogue(args)
    if args.num_beams < 1 or args.max_batch_size < 1 or args.max_wait_ms < 0 or args.max_history < 0:
        raise SystemExit("error: --num_beams and --max_batch_size must be >= 1, --max_wait_ms and --max_history >= 0")
    if not 1 <= args.port <= 65535:
        raise SystemExit(f"error: --port must be in 1..65535, got {args.port}")
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise SystemExit(f"error: --dtype must be auto, float32, bfloat16 or float16, got {args.dtype!r}")


def main(args: Args) -> None:
    check_args(args)
    import uvicorn

    from minionerec.serving.recommender import Recommender
    from minionerec.serving.app import create_app

    set_seed(args.seed)
    try:
        recommender = Recommender.load(args.base_model, args.sid_index_path, args.item_meta_path, args.num_beams,
                                       args.dtype, args.device, args.prompt_style)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    app = create_app(recommender, args.max_batch_size, args.max_wait_ms / 1000, args.max_history)
    print(f"[serve] {recommender.catalogue.num_items} items, {args.num_beams} beams, "
          f"http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    run(main, Args)
