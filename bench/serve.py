"""Serving benchmark: requests/s and p50/p95 latency of serve.py over loopback HTTP, on CPU.

    python -m bench.serve                                   # real Industrial catalogue if ../shared/data is present
    python -m bench.serve --requests 64 --configs 1x1,1x8,8x8 --num_beams 50 --k 10 --threads 2

For every `BxC` in --configs, serve.py runs with --max_batch_size B and C client threads each send
requests back to back (histories from the test split, in order) until --requests have been answered;
one server per distinct B, on 127.0.0.1 only, stopped at the end. The model is a random small Qwen2
(`minionerec.model.tiny`, hidden 64, 2 layers) on the catalogue's own tokenizer, so the numbers are the
decoder's and the HTTP stack's cost, not a trained model's quality; a real checkpoint: --base_model.

Then an overload run (--overload QxC, "" to skip): serve.py with --max_batch_size the largest B and
--max_queue Q, C clients (more than the B + Q the server admits) sending --overload_requests requests back
to back without retrying; it reports how many were shed (503 + Retry-After, refused at once) and the
p50/p95 latency of the served ones, which the bounded queue keeps near the unloaded batch latency.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from minionerec.data.formats import load_split
from minionerec.run.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]

REAL = ROOT.parent / "shared/data/Amazon"
CATEGORY = "Industrial_and_Scientific"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base_model", default="", help="checkpoint to serve; default: a random small Qwen2 built here")
    p.add_argument("--sid_index_path", default="")
    p.add_argument("--item_meta_path", default="")
    p.add_argument("--test_file", default="", help="CSV whose history_item_id lists are the requests")
    p.add_argument("--configs", default="1x1,1x8,8x8", help="max_batch_size x client concurrency, comma-separated")
    p.add_argument("--requests", type=int, default=48, help="answered requests per config (bounded)")
    p.add_argument("--num_beams", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max_wait_ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server (OMP_NUM_THREADS)")
    p.add_argument("--overload", default="2x32", help="QxC: serve.py --max_queue Q, C clients at once; '' = skip")
    p.add_argument("--overload_requests", type=int, default=96, help="requests sent in the overload run (bounded)")
    args = p.parse_args(argv)
    try:
        args.configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
        assert all(len(c) == 2 and min(c) >= 1 for c in args.configs)
    except (ValueError, AssertionError):
        p.error(f"--configs: expected e.g. 1x1,8x8, got {args.configs!r}")
    if not 1 <= args.requests <= 10_000:
        p.error("--requests must be in 1..10000")
    try:
        args.overload = tuple(int(v) for v in args.overload.split("x")) if args.overload else None
        assert args.overload is None or (len(args.overload) == 2 and args.overload[0] >= 0 and args.overload[1] >= 1)
    except (ValueError, AssertionError):
        p.error(f"--overload: expected QxC (e.g. 2x32) or '', got {args.overload!r}")
    if not 1 <= args.overload_requests <= 10_000:
        p.error("--overload_requests must be in 1..10000")
    return args


def default_inputs(workdir: Path) -> dict:
    """The real Industrial catalogue and test split when present, else the demo data; a random model on it."""
    from minionerec.model.tiny import build_tiny_model

    if (REAL / "index" / f"{CATEGORY}.index.json").is_file():
        index, meta = REAL / "index" / f"{CATEGORY}.index.json", REAL / "index" / f"{CATEGORY}.item.json"
        test = next((REAL / "test").glob(f"{CATEGORY}*.csv"))
    else:
        from minionerec.prep.make_demo_data import make_demo_data

        make_demo_data(workdir / "data", category="Demo")
        index, meta, test = (workdir / "data/index/Demo.index.json", workdir / "data/index/Demo.item.json",
                             workdir / "data/test/Demo.csv")
    model = build_tiny_model(workdir / "model", index, meta, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                             intermediate_size=256, seed=0)
    return {"base_model": model, "sid_index_path": index, "item_meta_path": meta, "test_file": test}


def start_server(inputs: dict, args, max_batch_size: int, max_queue: int = 64) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "serve.py"), "--base_model", str(inputs["base_model"]),
           "--sid_index_path", str(inputs["sid_index_path"]), "--item_meta_path", str(inputs["item_meta_path"]),
           "--host", "127.0.0.1", "--port", str(port), "--num_beams", str(args.num_beams),
           "--max_batch_size", str(max_batch_size), "--max_wait_ms", str(args.max_wait_ms), "--device", "cpu",
           "--max_queue", str(max_queue), "--request_timeout_s", "600"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: serve.py exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("error: serve.py did not come up within 300 s")


def run_config(url: str, histories: list[list[str]], args, concurrency: int) -> dict:
    """`args.requests` requests from `concurrency` threads; latency per request, wall time overall."""
    with httpx.Client(base_url=url, timeout=600) as client:
        for history in histories[:2]:  # warm-up: first-call allocations are not part of the numbers
            client.post("/recommend", json={"history": history, "k": args.k}).raise_for_status()
        before = client.get("/health").json()

    def one(i: int) -> float:
        with httpx.Client(base_url=url, timeout=600) as c:
            start = time.perf_counter()
            c.post("/recommend", json={"history": histories[i % len(histories)], "k": args.k}).raise_for_status()
            return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = sorted(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - start
    after = httpx.get(f"{url}/health", timeout=10).json()
    batches = after["batches"] - before["batches"]
    return {"rps": args.requests / wall, "p50": statistics.median(latencies) * 1000,
            "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000,
            "mean_batch": (after["requests"] - before["requests"]) / max(batches, 1)}


def run_overload(url: str, histories: list[list[str]], args, clients: int) -> dict:
    """`args.overload_requests` requests from `clients` threads, no retries: served vs shed (503), and the
    latency of the served ones."""
    with httpx.Client(base_url=url, timeout=600) as client:
        client.post("/recommend", json={"history": histories[0], "k": args.k}).raise_for_status()  # warm-up
    lock, state = threading.Lock(), {"next": 0}
    served, shed, other = [], [], []

    def client_loop():
        with httpx.Client(base_url=url, timeout=600) as c:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= args.overload_requests:
                    return
                start = time.perf_counter()
                status = c.post("/recommend", json={"history": histories[i % len(histories)], "k": args.k}).status_code
                elapsed = time.perf_counter() - start
                with lock:
                    (served if status == 200 else shed if status == 503 else other).append(elapsed)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    served.sort()
    return {"sent": args.overload_requests, "served": len(served), "shed": len(shed), "other": len(other),
            "served_rps": len(served) / wall,
            "p50": statistics.median(served) * 1000 if served else float("nan"),
            "p95": served[min(len(served) - 1, int(0.95 * len(served)))] * 1000 if served else float("nan"),
            "shed_p95": sorted(shed)[min(len(shed) - 1, int(0.95 * len(shed)))] * 1000 if shed else float("nan")}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        given = {k: getattr(args, k) for k in ("base_model", "sid_index_path", "item_meta_path", "test_file")}
        inputs = given if all(given.values()) else default_inputs(Path(tmp))
        test = load_split(inputs["test_file"])
        histories = [list(map(str, h)) for h in test["history_item_id"] if h]
        rows = []
        for max_batch_size in dict.fromkeys(b for b, _ in args.configs):
            proc, url = start_server(inputs, args, max_batch_size)
            try:
                for b, concurrency in args.configs:
                    if b == max_batch_size:
                        rows.append({"max_batch_size": b, "concurrency": concurrency,
                                     **run_config(url, histories, args, concurrency)})
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        overload = None
        if args.overload:
            max_queue, clients = args.overload
            b = max(b for b, _ in args.configs)
            proc, url = start_server(inputs, args, b, max_queue)
            try:
                overload = {"max_batch_size": b, "max_queue": max_queue, "clients": clients,
                            **run_overload(url, histories, args, clients)}
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    n_items = len(json.loads(Path(inputs["sid_index_path"]).read_text()))
    print(f"serve.py on {cpu_name()}, {os.cpu_count()} cores, server threads "
          f"{args.threads}, {n_items} items, {args.num_beams} beams, k={args.k}, {args.requests} requests per row, "
          f"loopback HTTP, {datetime.date.today()}")
    print("| max_batch_size | concurrent clients | requests/s | p50 ms | p95 ms | mean batch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['max_batch_size']} | {r['concurrency']} | {r['rps']:.2f} | {r['p50']:.0f} | {r['p95']:.0f} "
              f"| {r['mean_batch']:.1f} |")
    if overload:
        o = overload
        print(f"\noverload: {o['clients']} clients, no retries, server admits max_batch_size + max_queue = "
              f"{o['max_batch_size'] + o['max_queue']} at once")
        print("| max_batch_size | max_queue | clients | sent | served | shed (503) | served/s | p50 ms | p95 ms "
              "| p95 ms of a 503 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {o['max_batch_size']} | {o['max_queue']} | {o['clients']} | {o['sent']} | {o['served']} "
              f"| {o['shed']} | {o['served_rps']:.2f} | {o['p50']:.0f} | {o['p95']:.0f} | {o['shed_p95']:.0f} |")
        if o["other"]:
            print(f"({o['other']} answers were neither 200 nor 503)")
        rows.append(overload)
    return rows


if __name__ == "__main__":
    main()
