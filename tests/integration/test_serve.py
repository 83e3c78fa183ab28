"""serve.py over real HTTP on 127.0.0.1 (tiny model), and the batching queue on its own.

The server runs as a subprocess on a free port for the whole module and is stopped at the end; every
request has a timeout, so a hung server fails the test instead of blocking it.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import evaluate
import serve
from conftest import free_port
from minionerec.data.formats import load_sid_index, sid_string
from minionerec.serving.queue import BatchQueue

ROOT = Path(__file__).resolve().parents[2]
NUM_BEAMS = 10
TIMEOUT = 60.0  # seconds per request: generous for 2 shared CPU cores, but bounded
RELOAD_TOKEN = "test-reload-token-0123456789"


@pytest.fixture(scope="module")
def index_path(demo_data, demo_category) -> Path:
    return demo_data / "index" / f"{demo_category}.index.json"


@pytest.fixture(scope="module")
def server(demo_data, demo_category, tiny_model_dir, index_path, tmp_path_factory):
    port = free_port()
    token_file = tmp_path_factory.mktemp("serve_token") / "reload.token"
    token_file.write_text(RELOAD_TOKEN + "\n")
    token_file.chmod(0o600)  # serve.py refuses a token file others can write (the umask may allow it)
    # max_wait 300 ms: requests fired together in the test reliably share a batch; the reload endpoint is on,
    # for files anywhere under pytest's temporary root (the tests' tmp_path), behind a token the client sends
    cmd = [sys.executable, str(ROOT / "serve.py"), "--base_model", str(tiny_model_dir),
           "--sid_index_path", str(index_path),
           "--item_meta_path", str(demo_data / "index" / f"{demo_category}.item.json"),
           "--port", str(port), "--num_beams", str(NUM_BEAMS), "--max_batch_size", "8", "--max_wait_ms", "300",
           "--allow_reload", "true", "--reload_token_file", str(token_file),
           "--data_root", str(tmp_path_factory.getbasetemp())]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve.py exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("serve.py did not answer /health within 120 s")
            time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=TIMEOUT,
                          headers={"authorization": f"Bearer {RELOAD_TOKEN}"}) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_concurrent_requests_are_batched_and_equal_evaluate(server, demo_data, tiny_model_dir, index_path, tmp_path):
    n = 8
    evaluate.main(evaluate.Args(base_model=str(tiny_model_dir), test_file=str(demo_data / "test" / "Demo.csv"),
                                sid_index_path=str(index_path), result_json=str(tmp_path / "pred.json"),
                                num_beams=NUM_BEAMS, batch_size=3, sample=n))
    records = json.loads((tmp_path / "pred.json").read_text())
    before = server.get("/health").json()

    def ask(record):
        history = [str(i) for i in record["history_item_id"]]
        return server.post("/recommend", json={"history": history, "k": NUM_BEAMS})

    with ThreadPoolExecutor(max_workers=n) as pool:  # all n requests in flight together
        responses = list(pool.map(ask, records))
    index = load_sid_index(index_path)
    for record, response in zip(records, responses):
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert [item["sid"] for item in items] == record["predict"]  # same ranking as evaluate.py
        assert [item["rank"] for item in items] == list(range(1, NUM_BEAMS + 1))
        assert all(sid_string(index[item["item_id"]]) == item["sid"] for item in items)
        scores = [item["score"] for item in items]
        assert scores == sorted(scores, reverse=True) and scores[0] < 0
    after = server.get("/health").json()
    assert after["requests"] - before["requests"] == n
    assert after["batches"] - before["batches"] < n and after["largest_batch"] > 1  # some requests shared a batch


def test_k_truncates_the_same_beams(server):
    full = server.post("/recommend", json={"history": ["1", "2"], "k": NUM_BEAMS}).json()["items"]
    top3 = server.post("/recommend", json={"history": [1, "2"], "k": 3}).json()["items"]  # ints are ids too
    assert top3 == full[:3]
    long = server.post("/recommend", json={"history": [str(i) for i in range(12)], "k": 3}).json()
    last_ten = server.post("/recommend", json={"history": [str(i) for i in range(2, 12)], "k": 3}).json()
    assert long["history"] == [str(i) for i in range(2, 12)] and long["items"] == last_ten["items"]  # --max_history 10


@pytest.mark.parametrize("body, field, words", [
    ({"history": ["1", "no-such-item"], "k": 3}, "history", "history[1]: unknown item 'no-such-item'"),
    ({"history": [], "k": 3}, "history", "non-empty"),
    ({"history": ["1"], "k": NUM_BEAMS + 1}, "k", "above the beam limit"),
    ({"history": ["1"], "k": 0}, "k", "positive integer"),
    ({"history": ["1"], "k": "ten"}, "k", "valid integer"),
    ({"k": 3}, "history", "Field required"),
    ({"history": "1", "k": 3}, "history", "valid list"),
])
def test_bad_requests_are_422_naming_the_field(server, body, field, words):
    response = server.post("/recommend", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field and words in response.json()["error"]


def test_malformed_json_is_422(server):
    response = server.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "body"


def test_catalogue_reload_swaps_the_items(server, index_path, tmp_path):
    index = load_sid_index(index_path)
    kept = dict(list(index.items())[:40])
    small = tmp_path / "small.index.json"
    small.write_text(json.dumps(kept))
    try:
        response = server.post("/catalogue/reload", json={"sid_index_path": str(small)})
        assert response.status_code == 200 and response.json()["items"] == 40
        items = server.post("/recommend", json={"history": ["1"], "k": NUM_BEAMS}).json()["items"]
        assert {item["item_id"] for item in items} <= set(kept)
        dropped = next(i for i in index if i not in kept)
        response = server.post("/recommend", json={"history": [dropped], "k": 3})
        assert response.status_code == 422 and response.json()["field"] == "history"

        bad = tmp_path / "bad.index.json"  # a SID token the model does not have: refused, old catalogue kept
        bad.write_text(json.dumps({**kept, "new": ["<a_999>", "<b_0>", "<c_0>"]}))
        response = server.post("/catalogue/reload", json={"sid_index_path": str(bad)})
        assert response.status_code == 422 and response.json()["field"] == "sid_index_path"
        assert "not single tokens" in response.json()["error"]
        missing = server.post("/catalogue/reload", json={"sid_index_path": str(tmp_path / "nope.json")})
        assert missing.status_code == 422 and "file not found" in missing.json()["error"]
        assert server.get("/health").json()["sid_index_path"] == str(small)

        # an added item (as minionerec/rq/add_items.py writes it: a free SID of known tokens) is usable after a reload
        tokens = [sorted({s[level] for s in index.values()}) for level in range(3)]
        used = {tuple(s) for s in index.values()}
        free = next([a, b, c] for a in tokens[0] for b in tokens[1] for c in tokens[2] if (a, b, c) not in used)
        grown = tmp_path / "grown.index.json"
        grown.write_text(json.dumps({**index, "new-1": free}))
        assert server.post("/catalogue/reload", json={"sid_index_path": str(grown)}).json()["items"] == len(index) + 1
        response = server.post("/recommend", json={"history": ["new-1", "1"], "k": 3})
        assert response.status_code == 200 and response.json()["history"] == ["new-1", "1"]
    finally:
        assert server.post("/catalogue/reload", json={"sid_index_path": str(index_path)}).status_code == 200
    assert server.get("/health").json()["items"] == len(index)


def test_a_request_in_flight_during_a_reload_finishes_on_the_old_catalogue(server, index_path, tmp_path):
    """The server waits up to 300 ms for batch company, so the reload lands while the request is queued."""
    index = load_sid_index(index_path)
    history = ["1", "2"]
    full = server.post("/recommend", json={"history": history, "k": NUM_BEAMS}).json()["items"]
    kept = {i: s for i, s in index.items() if i not in {item["item_id"] for item in full[:2]}}  # drop its top 2
    small = tmp_path / "small.index.json"
    small.write_text(json.dumps(kept))
    done = {}

    def in_flight():
        done["response"] = server.post("/recommend", json={"history": history, "k": NUM_BEAMS})
        done["at"] = time.monotonic()

    try:
        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(0.1)
        assert server.post("/catalogue/reload", json={"sid_index_path": str(small)}).status_code == 200
        reloaded_at = time.monotonic()
        thread.join(timeout=TIMEOUT)
        assert reloaded_at < done["at"]  # the reload finished while the request was still in flight
        assert done["response"].json()["items"] == full  # ... and it was decoded on the old trie
        after = server.post("/recommend", json={"history": history, "k": NUM_BEAMS}).json()["items"]
        assert {item["item_id"] for item in after} <= set(kept)  # later requests see the new catalogue
    finally:
        assert server.post("/catalogue/reload", json={"sid_index_path": str(index_path)}).status_code == 200


@pytest.mark.parametrize("flags, message", [
    (dict(base_model="nope"), "--base_model must be a local model directory"),
    (dict(sid_index_path=""), "--sid_index_path is required"),
    (dict(item_meta_path="missing.json"), "--item_meta_path file not found"),
    (dict(train_path="missing.csv"), "--train_path file not found"),
    (dict(num_beams=0), "--num_beams"),
    (dict(port=70000), "--port"),
])
def test_bad_flags_fail_before_loading(tiny_model_dir, index_path, flags, message):
    args = serve.Args(**{**dict(base_model=str(tiny_model_dir), sid_index_path=str(index_path)), **flags})
    with pytest.raises(SystemExit, match=message):
        serve.main(args)


def test_in_flight_requests_finish_on_their_catalogue():
    """The queue decodes each request with the catalogue it was submitted with, even after a swap."""
    release = threading.Event()
    calls = []

    def run_batch(prompts, ks, catalogue):
        calls.append((list(prompts), catalogue))
        if catalogue == "old":
            release.wait(timeout=10)  # the first batch is still decoding while the swap happens
        return [f"{p}@{catalogue}" for p in prompts]

    async def scenario():
        queue = BatchQueue(run_batch, max_batch_size=8, max_wait_s=0.0)
        await queue.start()
        try:
            first = asyncio.create_task(queue.submit("a", 1, "old"))
            while not calls:
                await asyncio.sleep(0.01)
            later = [asyncio.create_task(queue.submit(p, 1, "new")) for p in ("b", "c")]
            await asyncio.sleep(0.05)
            release.set()
            return await first, await asyncio.gather(*later), queue.stats
        finally:
            await queue.stop()

    first, later, stats = asyncio.run(scenario())
    assert first == "a@old" and later == ["b@new", "c@new"]
    assert calls == [(["a"], "old"), (["b", "c"], "new")]  # b and c arrived during a's decode: one batch
    assert stats == {"requests": 3, "batches": 2, "largest_batch": 2}


def test_queue_splits_by_catalogue_and_reports_errors_to_each_request():
    def run_batch(prompts, ks, catalogue):
        if catalogue == "broken":
            raise RuntimeError("decode failed")
        return [(p, k, catalogue) for p, k in zip(prompts, ks)]

    async def scenario():
        queue = BatchQueue(run_batch, max_batch_size=8, max_wait_s=0.2)
        await queue.start()
        try:
            ok = [asyncio.create_task(queue.submit(p, k, c)) for p, k, c in (("a", 1, "x"), ("b", 2, "y"), ("c", 3, "x"))]
            broken = asyncio.create_task(queue.submit("d", 1, "broken"))
            results = await asyncio.gather(*ok)
            with pytest.raises(RuntimeError, match="decode failed"):
                await broken
            return results, queue.stats
        finally:
            await queue.stop()

    results, stats = asyncio.run(scenario())
    assert results == [("a", 1, "x"), ("b", 2, "y"), ("c", 3, "x")]
    assert stats == {"requests": 4, "batches": 3, "largest_batch": 2}  # one collected batch, three catalogues
