"""Serve recommendations over HTTP (FastAPI + uvicorn) from one checkpoint.

    python serve.py --base_model out/sft/final_checkpoint --sid_index_path X.index.json \
        --item_meta_path X.item.json --port 8000 --num_beams 50

    POST /recommend          {"history": ["12", "40"], "k": 10} -> {"items": [{rank, item_id, title, sid, score}]}
    GET  /health             catalogue size, beam limit, batching and refusal counters
    POST /catalogue/reload   {"sid_index_path": "...", "item_meta_path": "..."}: swap the catalogue atomically
                             (only with --allow_reload and --reload_token_file; paths under --data_root)
    GET  /docs, /redoc, /openapi.json   the API's description, only with --api_docs true

Concurrent requests are batched into one constrained beam search (up to --max_batch_size, waiting at
most --max_wait_ms for company). Every error is JSON `{"error": ..., "field": ...}`: bad input (unknown
item, empty history, k above --num_beams, wrong JSON types) is a 422; a full queue or a request past
--request_timeout_s is a 503 with Retry-After; a body over --max_body_bytes a 413; a missing token a 401.
Limits and tokens: docs/serving.md, "Security and limits".
"""
from __future__ import annotations

import ipaddress
import math
import os
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from transformers import set_seed

from minionerec.data.formats import DataError, load_sid_index
from minionerec.run import preflight
from minionerec.run.cli import run
from minionerec.serving.recommender import check_model_and_catalogue

MAX_NUM_BEAMS = 1000  # a sane ceiling: each request decodes num_beams sequences (100000 took 13.9 GB and 120 s)
MAX_BATCH_SIZE = 256
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
MAX_TOKEN_FILE_BYTES = 4096  # a token is one short line: a larger file is the wrong file


@dataclass
class Args:
    """HTTP recommendation server: constrained beam search behind POST /recommend."""

    base_model: str = ""  # model directory (sft.py / rl.py final_checkpoint)
    sid_index_path: str = ""  # index.json: the recommendable items (swap later with /catalogue/reload)
    item_meta_path: str = ""  # item.json: titles (responses, and histories given by title)
    train_path: str = ""  # train CSV: of items sharing a SID, show the most frequent next item; "" = the first
    host: str = "127.0.0.1"  # 0.0.0.0 to listen on every interface (then set --api_token_file)
    port: int = 8000  # TCP port to listen on (1..65535)
    num_beams: int = 50  # beam width for every request = the largest k served (1..1000, <= the catalogue's SIDs)
    max_batch_size: int = 8  # requests per beam search call (1..256)
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others (0..10000)
    max_history: int = 10  # most recent history items in the prompt (the data pipeline's window); 0 = all
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda if visible) | cpu | cuda[:N]
    log_level: str = "warning"  # uvicorn's: critical | error | warning | info | debug | trace
    seed: int = 42  # seeds Python, NumPy and torch (beam search itself is deterministic)
    prompt_style: str = "upstream"  # the style the checkpoint was trained with (sft.py --prompt_style): upstream | minionerec
    # limits: each is checked before any work is done for a request
    max_queue: int = 32  # /recommend requests that may wait beyond one full batch; more get 503 + Retry-After at once
    request_timeout_s: float = 30.0  # a /recommend not answered by then gets 503 (a still-queued decode is dropped)
    max_body_bytes: int = 262144  # larger request bodies get 413 before they are read
    max_history_items: int = 1000  # most entries a request's history may hold (more: 422)
    read_timeout_s: float = 10.0  # request headers, and then the body, must arrive within this (else closed / 408)
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this many seconds
    max_connections: int = 256  # open connections; more are closed at once
    # access
    api_token_file: str = ""  # file holding a bearer token every request must send (Authorization: Bearer ...); "" = none
    allow_reload: bool = False  # enable POST /catalogue/reload (needs --reload_token_file)
    reload_token_file: str = ""  # file holding the bearer token /catalogue/reload requires
    data_root: str = ""  # /catalogue/reload loads files only under this directory; "" = the directory of --sid_index_path
    api_docs: bool = False  # serve /docs, /redoc and /openapi.json (behind --api_token_file when it is set)


def read_token(path: str, flag: str) -> str:
    """A bearer token from a file (kept off the command line, where `ps` shows it): a regular file of at most
    MAX_TOKEN_FILE_BYTES that only its owner can write (sshd's StrictModes rule: whoever can write it can
    choose the token), holding one line of >= 16 printable ASCII characters without spaces. The token itself
    is never printed."""
    def refuse(why: str) -> NoReturn:
        raise SystemExit(f"error: --{flag} {path}: {why}")

    try:  # O_NONBLOCK: opening a FIFO that nobody writes would otherwise hang start-up
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        refuse(f"cannot read it ({e.strerror})")
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # a FIFO, device or directory: a read would block, never end or fail
            refuse("not a regular file")
        if mode & 0o022:
            refuse(f"group or others can write it (mode {stat.S_IMODE(mode):04o}); fix it with: chmod go-w {path}")
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        refuse(f"larger than {MAX_TOKEN_FILE_BYTES} bytes (a token file holds one line)")
    token = data.decode("utf-8", errors="replace").strip()
    if len(token) < 16 or not all(33 <= ord(c) < 127 for c in token):
        refuse("the token must be one line of at least 16 printable ASCII characters without spaces")
    return token


def check_listen(host: str, port: int) -> None:
    """The address can be bound now (not in use, a local address): otherwise uvicorn fails after the model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise SystemExit(f"error: --host {host!r}: not an address or a resolvable name ({e})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            raise SystemExit(f"error: --host/--port {host}:{port}: cannot listen there ({e.strerror})") from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_args(args: Args) -> dict:
    """Every flag, before the model loads; returns the tokens read from their files."""
    check_model_and_catalogue(args)
    preflight.model_dir(args.base_model, "base_model")
    if not 1 <= args.num_beams <= MAX_NUM_BEAMS:
        raise SystemExit(f"error: --num_beams must be in 1..{MAX_NUM_BEAMS}, got {args.num_beams}")
    if not 1 <= args.max_batch_size <= MAX_BATCH_SIZE:
        raise SystemExit(f"error: --max_batch_size must be in 1..{MAX_BATCH_SIZE}, got {args.max_batch_size}")
    if not (math.isfinite(args.max_wait_ms) and 0 <= args.max_wait_ms <= 10_000) or args.max_history < 0:
        raise SystemExit("error: --max_wait_ms must be in 0..10000 and --max_history >= 0")
    if not 1 <= args.port <= 65535:
        raise SystemExit(f"error: --port must be in 1..65535, got {args.port}")
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise SystemExit(f"error: --dtype must be auto, float32, bfloat16 or float16, got {args.dtype!r}")
    if args.log_level not in LOG_LEVELS:
        raise SystemExit(f"error: --log_level must be one of {' | '.join(LOG_LEVELS)}, got {args.log_level!r}")
    preflight.device(args.device)
    for flag in ("request_timeout_s", "read_timeout_s"):
        preflight.positive_finite(getattr(args, flag), flag)
    if args.max_queue < 0 or args.max_body_bytes < 1 or args.max_history_items < 1 or args.keep_alive_s < 1 \
            or args.max_connections < 1:
        raise SystemExit("error: --max_queue must be >= 0; --max_body_bytes, --max_history_items, --keep_alive_s "
                         "and --max_connections >= 1")
    tokens = {"api_token": read_token(args.api_token_file, "api_token_file") if args.api_token_file else ""}
    if args.reload_token_file and not args.allow_reload:
        raise SystemExit("error: --reload_token_file is set but /catalogue/reload is off: add --allow_reload true")
    if args.allow_reload:
        if not args.reload_token_file:
            raise SystemExit("error: --allow_reload needs --reload_token_file (the bearer token the reload requires)")
        tokens["reload_token"] = read_token(args.reload_token_file, "reload_token_file")
        if tokens["reload_token"] == tokens["api_token"]:
            raise SystemExit("error: --reload_token_file must hold a different token than --api_token_file")
    if args.data_root and not Path(args.data_root).is_dir():
        raise SystemExit(f"error: --data_root must be a directory, got {args.data_root!r}")
    preflight.within_catalogue(args.num_beams, "num_beams", load_sid_index(args.sid_index_path), args.sid_index_path)
    check_listen(args.host, args.port)
    return tokens


def main(args: Args) -> None:
    tokens = check_args(args)
    from minionerec.serving.app import create_app
    from minionerec.serving.guard import Access, Limits, server_config
    from minionerec.serving.recommender import Recommender

    limits = Limits(max_queue=args.max_queue, request_timeout_s=args.request_timeout_s,
                    max_body_bytes=args.max_body_bytes, max_history_items=args.max_history_items,
                    read_timeout_s=args.read_timeout_s)
    access = Access(api_token=tokens["api_token"], reload_token=tokens.get("reload_token", ""),
                    data_root=args.data_root or str(Path(args.sid_index_path).resolve().parent),
                    api_docs=args.api_docs)
    set_seed(args.seed)
    try:
        recommender = Recommender.load(args.base_model, args.sid_index_path, args.item_meta_path, args.num_beams,
                                       args.dtype, args.device, args.prompt_style, args.train_path)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    app = create_app(recommender, args.max_batch_size, args.max_wait_ms / 1000, args.max_history, limits, access)
    if not tokens["api_token"] and not is_loopback(args.host):
        print(f"[serve] warning: listening on {args.host} without --api_token_file: anyone who can reach it can "
              "query it", file=sys.stderr, flush=True)
    print(f"[serve] {recommender.catalogue.num_items} items, {args.num_beams} beams, "
          f"reload {'on' if args.allow_reload else 'off'}, token {'on' if tokens['api_token'] else 'off'}, "
          f"http://{args.host}:{args.port}", flush=True)
    import uvicorn

    uvicorn.Server(server_config(app, args.host, args.port, args.log_level, args.keep_alive_s, args.read_timeout_s,
                                 args.max_connections)).run()


if __name__ == "__main__":
    run(main, Args)
