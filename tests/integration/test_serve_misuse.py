"""serve.py under misuse (issues 22, 37): access control, limits, strict input, flag checks (connection-level
limits: test_serve_limits.py).

The HTTP tests run the real app behind the real uvicorn server (serving.guard.server_config) in a thread of
this process, on a free port, with the tiny model's tokenizer and catalogue but a fake decoder (`decode`),
which a test can hold (`gate`) to fill the queue. Each request has a timeout, so a hung server fails a test.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
import uvicorn

import serve
from conftest import ROOT, free_port
from minionerec.data.formats import load_sid_index
from minionerec.model.loading import load_tokenizer
from minionerec.serving.app import create_app
from minionerec.serving.guard import Access, Limits, server_config
from minionerec.serving.recommender import (MAX_CATALOGUE_FILE_BYTES, Catalogue, Recommendation, Recommender,
                                            load_catalogue)

NUM_BEAMS = 10
TIMEOUT = 30.0
API_TOKEN = "api-token-abcdefghijklmnop"
RELOAD_TOKEN = "reload-token-abcdefghijklmnop"


@pytest.fixture(scope="module")
def index_path(demo_data, demo_category) -> Path:
    return demo_data / "index" / f"{demo_category}.index.json"


@pytest.fixture(scope="module")
def meta_path(demo_data, demo_category) -> Path:
    return demo_data / "index" / f"{demo_category}.item.json"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


class FakeDecoder:
    """Recommender.decode without a model: the first k catalogue items; holds while `gate` is clear."""

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[str]] = []

    def __call__(self, prompts, ks, catalogue):
        self.calls.append(list(prompts))
        self.gate.wait(timeout=20)
        items = list(catalogue.sid_index)
        return [[Recommendation(i, catalogue.titles[i], "".join(catalogue.sid_index[i]), -1.0 - r)
                 for r, i in enumerate(items[:k])] for k in ks]


@pytest.fixture
def make_server(tokenizer, index_path, meta_path, tmp_path):
    """make_server(limits=..., access=..., max_batch_size=..., catalogue_cls=..., **server_config kwargs) ->
    (url, decoder, recommender); every server is stopped at the end of the test."""
    started = []

    def make(limits=None, access=None, max_batch_size=8, max_wait_s=0.0, catalogue_cls=None, **config):
        catalogue = load_catalogue(index_path, meta_path, tokenizer)
        if catalogue_cls is not None:
            catalogue = catalogue_cls(**{f.name: getattr(catalogue, f.name) for f in fields(Catalogue)})
        recommender = Recommender(None, tokenizer, catalogue, NUM_BEAMS)
        decoder = FakeDecoder()
        recommender.decode = decoder
        app = create_app(recommender, max_batch_size, max_wait_s, 10, limits, access)
        port = free_port()
        server = uvicorn.Server(server_config(app, "127.0.0.1", port, "error", **config))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread, decoder))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}", decoder, recommender

    yield make
    for server, thread, decoder in started:
        decoder.gate.set()
        server.should_exit = True
        thread.join(timeout=20)


def post(url, path, body=None, timeout=TIMEOUT, **kw):
    return httpx.post(url + path, json=body, timeout=timeout, **kw) if body is not None else \
        httpx.post(url + path, timeout=timeout, **kw)


def assert_error(response, status, field=None, words=""):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "field"} and body["field"] == field, body
    assert words in body["error"], body


def in_thread(fn, *args, **kw):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", _capture(fn, *args, **kw)), daemon=True)
    thread.start()
    return thread, box


def _capture(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# ---------------------------------------------------------------- catalogue reload: off, token, data root


def test_reload_is_off_unless_enabled(make_server, index_path):
    url, _, recommender = make_server()
    response = post(url, "/catalogue/reload", {"sid_index_path": str(index_path)})
    assert_error(response, 404, None, "Not Found")
    assert recommender.catalogue.num_items == len(load_sid_index(index_path))


def test_reload_needs_its_own_token(make_server, index_path):
    access = Access(api_token=API_TOKEN, reload_token=RELOAD_TOKEN, data_root=str(index_path.parent))
    url, _, _ = make_server(access=access)
    body = {"sid_index_path": index_path.name}
    assert_error(post(url, "/catalogue/reload", body), 401, None, "bearer token")
    assert_error(post(url, "/catalogue/reload", body, headers={"authorization": f"Bearer {API_TOKEN}"}), 401)
    assert_error(post(url, "/catalogue/reload", body, headers={"authorization": f"Bearer {RELOAD_TOKEN}x"}), 401)
    ok = post(url, "/catalogue/reload", body, headers={"authorization": f"Bearer {RELOAD_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["sid_index_path"] == index_path.name


@pytest.fixture
def reload_server(make_server, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    url, decoder, recommender = make_server(access=Access(reload_token=RELOAD_TOKEN, data_root=str(root)))

    def reload(sid_index_path, item_meta_path=None):
        body = {"sid_index_path": sid_index_path}
        if item_meta_path is not None:
            body["item_meta_path"] = item_meta_path
        return post(url, "/catalogue/reload", body, headers={"authorization": f"Bearer {RELOAD_TOKEN}"})

    return url, root, reload, recommender


def test_reload_paths_outside_the_data_root_answer_like_missing_files(reload_server, tmp_path, index_path):
    url, root, reload, recommender = reload_server
    outside = tmp_path / "outside.index.json"
    outside.write_text(index_path.read_text())
    (root / "link.index.json").symlink_to(outside)
    (root / "subdir").mkdir()
    tries = ["/etc/passwd", "../../etc/hostname", "../outside.index.json", str(outside), "link.index.json",
             "subdir", "missing.json", "a\x00b", "/proc/self/environ"]
    answers = {json.dumps(reload(path).json()) for path in tries}
    assert answers == {json.dumps({"error": "sid_index_path: file not found under the server's data root",
                                   "field": "sid_index_path"})}
    response = reload("x" * 100_000)  # was a 500 with a traceback
    assert_error(response, 422, "sid_index_path", "at most 4096 characters")
    meta = reload("subdir/../missing.json", "/etc/passwd")
    assert_error(meta, 422, "sid_index_path", "file not found")
    assert recommender.catalogue.num_items == len(load_sid_index(index_path))  # nothing was swapped


def test_reload_errors_never_show_file_contents_or_server_paths(reload_server, index_path, meta_path):
    url, root, reload, recommender = reload_server
    index = load_sid_index(index_path)
    (root / "secret.json").write_text(json.dumps({"api_key": "s3cr3t-value-42"}))
    (root / "secret_sid.json").write_text(json.dumps({"1": ["<s3cr3t-value-42>"]}))
    (root / "binary.json").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.json").write_bytes('{"1": ["<a_1>"], "é": 1}'.encode("latin-1"))
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "five.index.json").write_text(json.dumps(dict(list(index.items())[:5])))  # fewer SIDs than beams
    (root / "ok.index.json").write_text(json.dumps(index))
    (root / "bad_meta.json").write_text(json.dumps({"1": {"api_key": "s3cr3t-value-42"}}))
    cases = [("secret.json", None, "sid_index_path", "not a usable SID index"),
             ("secret_sid.json", None, "sid_index_path", ""),
             ("binary.json", None, "sid_index_path", "not a usable SID index"),
             ("latin1.json", None, "sid_index_path", "not a usable SID index"),
             ("deep.json", None, "sid_index_path", "not a usable SID index"),
             ("five.index.json", None, "sid_index_path", "5 distinct SIDs, fewer than the server's 10 beams"),
             ("ok.index.json", "secret.json", "item_meta_path", "not a usable item.json"),
             ("ok.index.json", "bad_meta.json", "item_meta_path", "not a usable item.json"),
             ("ok.index.json", "binary.json", "item_meta_path", "not a usable item.json")]
    for index_file, meta_file, field, words in cases:
        response = reload(index_file, meta_file)
        assert_error(response, 422, field, words)
        assert "s3cr3t" not in response.text and str(root) not in response.text, response.text
    health = httpx.get(url + "/health", timeout=TIMEOUT).json()
    assert health["items"] == len(index) and str(root.parent) not in json.dumps(health)
    response = post(url, "/recommend", {"history": ["1"], "k": NUM_BEAMS})  # the catalogue still serves
    assert response.status_code == 200 and len(response.json()["items"]) == NUM_BEAMS
    assert reload("ok.index.json").status_code == 200


def test_health_shows_no_server_path(make_server, index_path):
    url, _, _ = make_server(access=Access(data_root=str(index_path.parent.parent)))
    health = httpx.get(url + "/health", timeout=TIMEOUT).json()
    assert health["sid_index_path"] == f"index/{index_path.name}"


# ---------------------------------------------------------------- the API token


def test_api_token_guards_every_endpoint(make_server):
    url, decoder, _ = make_server(access=Access(api_token=API_TOKEN))
    good = {"authorization": f"Bearer {API_TOKEN}"}
    for method, path in [("GET", "/health"), ("POST", "/recommend"), ("GET", "/docs"), ("GET", "/openapi.json"),
                         ("GET", "/nope"), ("POST", "/catalogue/reload")]:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": API_TOKEN}):
            response = httpx.request(method, url + path, headers=headers, json={"history": ["1"]}, timeout=TIMEOUT)
            assert_error(response, 401, None, "bearer token")
            assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/health", headers=good, timeout=TIMEOUT).status_code == 200
    response = post(url, "/recommend", {"history": ["1"], "k": 3}, headers=good)
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    assert len(decoder.calls) == 1  # refused requests were never decoded


# ---------------------------------------------------------------- strict JSON, one error format


@pytest.mark.parametrize("content, field, words", [
    (json.dumps({"history": [True], "k": 3}), "history", "history[0]: expected an item id or title"),
    (json.dumps({"history": ["1", 12.0], "k": 3}), "history", "history[1]: expected an item id or title"),
    (json.dumps({"history": [None], "k": 3}), "history", "got null"),
    (json.dumps({"history": [["1"]], "k": 3}), "history", "got a list"),
    (json.dumps({"history": ["1"], "k": "5"}), "k", "valid integer"),
    (json.dumps({"history": ["1"], "k": 5.0}), "k", "valid integer"),
    (json.dumps({"history": ["1"], "k": True}), "k", "valid integer"),
    (json.dumps({"history": ["1"], "k": 3, "user": "u1"}), "user", "Extra inputs"),
    (json.dumps({"history": ["x" * 5000], "k": 3}), "history", "longer than 4096 characters"),
    (b'{"history": ["\xff\xfe"], "k": 3}', "body", "not valid JSON"),
    (b'{"history": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body", "not valid JSON"),
    (b"[1, 2]", "body", "expected a JSON object"),
    (b"", "body", "not valid JSON"),
])
def test_strict_json_types_and_one_error_format(make_server, content, field, words):
    url, decoder, _ = make_server()
    response = post(url, "/recommend", content=content, headers={"content-type": "application/json"})
    assert_error(response, 422, field, words)
    assert decoder.calls == []


def test_http_errors_use_the_same_format(make_server):
    url, _, _ = make_server()
    assert_error(httpx.get(url + "/nope", timeout=TIMEOUT), 404, None, "Not Found")
    assert_error(httpx.get(url + "/recommend", timeout=TIMEOUT), 405, None, "Method Not Allowed")


# ---------------------------------------------------------------- size caps, event loop, queue, timeouts


def test_body_over_the_limit_is_413_before_it_is_read(make_server):
    url, decoder, _ = make_server(limits=Limits(max_body_bytes=4096))
    big = json.dumps({"history": ["1"] * 10_000, "k": 3}).encode()
    assert_error(post(url, "/recommend", content=big), 413, "body", "4096 bytes")

    def chunks():  # no Content-Length: counted while read
        for _ in range(100):
            yield b" " * 1000

    assert_error(post(url, "/recommend", content=chunks()), 413, "body", "4096 bytes")
    assert decoder.calls == []
    assert post(url, "/recommend", {"history": ["1"], "k": 3}).status_code == 200


def test_history_longer_than_the_cap_is_422(make_server):
    url, decoder, _ = make_server(limits=Limits(max_history_items=5))
    assert_error(post(url, "/recommend", {"history": ["1"] * 6, "k": 3}), 422, "history", "at most 5 items")
    assert post(url, "/recommend", {"history": ["1"] * 5, "k": 3}).status_code == 200
    assert len(decoder.calls) == 1


class SlowCatalogue(Catalogue):
    def resolve(self, *args, **kwargs):
        time.sleep(1.5)  # a huge history's resolution, as far as the event loop can tell
        return super().resolve(*args, **kwargs)


def test_history_resolution_does_not_block_other_clients(make_server):
    url, _, _ = make_server(catalogue_cls=SlowCatalogue)
    thread, box = in_thread(post, url, "/recommend", {"history": ["1"], "k": 3})
    time.sleep(0.3)
    start = time.monotonic()
    assert httpx.get(url + "/health", timeout=TIMEOUT).status_code == 200
    assert time.monotonic() - start < 0.8  # the event loop was free while the history resolved
    thread.join(timeout=TIMEOUT)
    assert box["value"].status_code == 200


def test_a_full_queue_answers_503_with_retry_after(make_server):
    url, decoder, _ = make_server(limits=Limits(max_queue=1), max_batch_size=1)
    decoder.gate.clear()  # the decoder is busy with the first request
    first = in_thread(post, url, "/recommend", {"history": ["1"], "k": 3})
    wait_for(lambda: len(decoder.calls) == 1)
    second = in_thread(post, url, "/recommend", {"history": ["2"], "k": 3})  # the one queue place
    time.sleep(0.3)
    start = time.monotonic()
    response = post(url, "/recommend", {"history": ["3"], "k": 3})
    assert time.monotonic() - start < 2
    assert_error(response, 503, None, "queue is full")
    assert int(response.headers["retry-after"]) >= 1
    decoder.gate.set()
    for thread, box in (first, second):
        thread.join(timeout=TIMEOUT)
        assert box["value"].status_code == 200
    health = httpx.get(url + "/health", timeout=TIMEOUT).json()
    assert health["shed"] == 1 and health["requests"] == 2


def test_requests_whose_client_left_are_not_decoded(make_server):
    url, decoder, _ = make_server(max_batch_size=1)
    decoder.gate.clear()
    first = in_thread(post, url, "/recommend", {"history": ["1"], "k": 3})
    wait_for(lambda: len(decoder.calls) == 1)
    for i in range(4):  # clients that give up after 0.2 s while the decoder is busy
        with pytest.raises(httpx.ReadTimeout):
            post(url, "/recommend", {"history": [str(i + 2)], "k": 3}, timeout=0.2)
    wait_for(lambda: httpx.get(url + "/health", timeout=TIMEOUT).json()["client_left"] == 4)
    decoder.gate.set()
    first[0].join(timeout=TIMEOUT)
    assert first[1]["value"].status_code == 200
    start = time.monotonic()
    assert post(url, "/recommend", {"history": ["9"], "k": 3}).status_code == 200
    assert time.monotonic() - start < 5
    assert len(decoder.calls) == 2  # the first request and the last: none of the abandoned ones
    assert httpx.get(url + "/health", timeout=TIMEOUT).json()["dropped"] == 4


def test_a_request_past_its_timeout_is_503_and_not_decoded(make_server):
    url, decoder, _ = make_server(limits=Limits(request_timeout_s=0.5), max_batch_size=1)
    decoder.gate.clear()
    first = in_thread(post, url, "/recommend", {"history": ["1"], "k": 3})
    wait_for(lambda: len(decoder.calls) == 1)
    start = time.monotonic()
    response = post(url, "/recommend", {"history": ["2"], "k": 3})
    assert time.monotonic() - start < 3
    assert_error(response, 503, None, "0.5 s request timeout")
    assert "retry-after" in response.headers
    first[0].join(timeout=TIMEOUT)
    assert_error(first[1]["value"], 503, None, "timeout")  # its decode ran past the timeout too
    decoder.gate.set()
    assert post(url, "/recommend", {"history": ["3"], "k": 3}).status_code == 200
    assert len(decoder.calls) == 2  # the timed-out queued request was dropped
    assert httpx.get(url + "/health", timeout=TIMEOUT).json()["timed_out"] == 2


# ---------------------------------------------------------------- flags: all checked before the model loads


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the flags were checked")

    monkeypatch.setattr(Recommender, "load", refuse)


def token_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)  # explicit: the umask must not decide whether the file is accepted
    return path


def flag_cases(tmp: Path) -> list:
    short = token_file(tmp / "short.token", "abc\n")
    good = token_file(tmp / "good.token", "x" * 20)
    other = token_file(tmp / "other.token", "y" * 20)
    big = token_file(tmp / "big.token", "z" * 5000)
    shared = token_file(tmp / "shared.token", "z" * 20, 0o666)
    group = token_file(tmp / "group.token", "z" * 20, 0o620)
    fifo = tmp / "index.fifo"
    os.mkfifo(fifo)
    huge = tmp / "huge.csv"
    with huge.open("wb") as f:
        f.truncate(MAX_CATALOGUE_FILE_BYTES + 1)  # sparse: takes no disk space
    return [
        (dict(num_beams=100_000), "--num_beams must be in 1..1000"),
        (dict(num_beams=81), "exceeds the"),  # 80 items in the demo catalogue
        (dict(max_batch_size=100_000), "--max_batch_size"),
        (dict(max_wait_ms=math.nan), "--max_wait_ms"),
        (dict(device="bogus"), "--device must be auto, cpu, cuda or cuda:N"),
        (dict(device="meta"), "--device must be"),
        (dict(log_level="bogus"), "--log_level must be one of"),
        (dict(request_timeout_s=0), "--request_timeout_s"),
        (dict(read_timeout_s=math.inf), "--read_timeout_s"),
        (dict(max_queue=-1), "--max_queue"),
        (dict(max_body_bytes=0), "--max_body_bytes"),
        (dict(max_connections=0), "--max_connections"),
        (dict(allow_reload=True), "--allow_reload needs --reload_token_file"),
        (dict(reload_token_file=str(good)), "add --allow_reload"),
        (dict(allow_reload=True, reload_token_file=str(short)), "at least 16"),
        (dict(allow_reload=True, reload_token_file=str(good), api_token_file=str(good)), "different token"),
        (dict(api_token_file=str(tmp / "missing.token")), "--api_token_file"),
        (dict(api_token_file=str(other), data_root=str(tmp / "nope")), "--data_root must be a directory"),
        (dict(host="no such host!"), "--host"),
        # files read whole: bounded, regular, and a token file only its owner can write
        (dict(api_token_file=str(tmp)), f"--api_token_file {tmp}: not a regular file"),
        (dict(api_token_file=str(big)), f"--api_token_file {big}: larger than 4096 bytes"),
        (dict(api_token_file=str(shared)), rf"--api_token_file {shared}: group or others can write it \(mode 0666\); "
                                           f"fix it with: chmod go-w {shared}$"),
        (dict(allow_reload=True, reload_token_file=str(group)), rf"{group}: .* \(mode 0620\)"),
        (dict(sid_index_path="/dev/zero"), "--sid_index_path /dev/zero: not a regular file"),
        (dict(item_meta_path=str(fifo)), f"--item_meta_path {fifo}: not a regular file"),
        (dict(item_meta_path=str(tmp)), "--item_meta_path .*: is a directory"),
        (dict(train_path=str(huge)), f"--train_path {huge}: larger than the 1 GiB limit"),
    ]


def test_every_flag_is_checked_before_the_model_loads(tiny_model_dir, index_path, tmp_path, no_model_load):
    for flags, message in flag_cases(tmp_path):
        args = serve.Args(**{**dict(base_model=str(tiny_model_dir), sid_index_path=str(index_path),
                                    port=free_port()), **flags})
        with pytest.raises(SystemExit, match=message) as error:
            serve.main(args)
        assert str(error.value).startswith("error: --") and "\n" not in str(error.value)


def test_a_fifo_token_file_is_one_line_at_once(tiny_model_dir, index_path, tmp_path, no_model_load):
    """A FIFO that nobody writes hung start-up (open() waits for a writer). Run in a thread, so that a regression
    fails this test instead of hanging the suite."""
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo)
    args = serve.Args(base_model=str(tiny_model_dir), sid_index_path=str(index_path), port=free_port(),
                      api_token_file=str(fifo))
    outcome = {}

    def start():
        try:
            serve.main(args)
        except SystemExit as e:
            outcome["error"] = str(e)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer comes and goes: the stuck open() returns
        pytest.fail("start-up hung on a FIFO given as --api_token_file")
    assert outcome["error"] == f"error: --api_token_file {fifo}: not a regular file"


def test_cuda_without_a_gpu_fails_before_loading(tiny_model_dir, index_path, no_model_load):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    args = serve.Args(base_model=str(tiny_model_dir), sid_index_path=str(index_path), device="cuda")
    with pytest.raises(SystemExit, match="no CUDA device is visible"):
        serve.main(args)


def test_a_port_in_use_fails_before_loading(tiny_model_dir, index_path, no_model_load):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = serve.Args(base_model=str(tiny_model_dir), sid_index_path=str(index_path),
                          port=taken.getsockname()[1])
        with pytest.raises(SystemExit, match="cannot listen there"):
            serve.main(args)


def test_bad_flag_is_one_line_exit_2(tiny_model_dir, index_path):
    """From the command line: one `error:` line, exit code 2, nothing on stdout. The flag: /dev/zero as the token
    file, which was read until MemoryError (a traceback); the memory cap keeps a regression from taking the
    machine's memory before it fails."""
    import resource

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    result = subprocess.run([sys.executable, "serve.py", "--base_model", str(tiny_model_dir), "--sid_index_path",
                             str(index_path), "--api_token_file", "/dev/zero"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, preexec_fn=cap_memory, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and result.stdout == "", (result.stdout, result.stderr[-2000:])
    assert result.stderr == "error: --api_token_file /dev/zero: not a regular file\n"
