"""serve.py's connection-level limits (issue 37): each limit docs/serving.md lists is the one the server enforces.

Same harness as test_serve_misuse.py: the real app behind the real uvicorn server in a thread, with a fake decoder
that a test can hold (`gate`). Raw sockets play the clients that httpx would not: idle, slow, abandoning, oversized.
The limits tested elsewhere: body size, history length, queue, request timeout (test_serve_misuse.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time

import httpx

from minionerec.serving.guard import Access, Limits
from minionerec.serving.recommender import MAX_CATALOGUE_FILE_BYTES, Catalogue
import test_serve_misuse as harness
from test_serve_misuse import API_TOKEN, TIMEOUT, assert_error, in_thread, post, wait_for

# the harness's fixtures, found by pytest among this module's names
index_path, meta_path, tokenizer = harness.index_path, harness.meta_path, harness.tokenizer
make_server, reload_server = harness.make_server, harness.reload_server


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (None if it stays open `seconds`), sending `trickle` a byte
    at a time every 0.1 s meanwhile."""
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - start
            if not data:
                return time.monotonic() - start
        if sent < len(trickle):
            try:
                sock.send(trickle[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
            sent += 1
    return None


def is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` by now (reads and drops anything it sent)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def exchange(port: int, request: bytes, piece: int = 0) -> bytes:
    """Send `request` on a new connection (in `piece`-byte writes, 0 = at once) and return what the server answers
    until it closes the connection (b"" when it resets it). A connection the server keeps open fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answer = b""
        try:
            for start in range(0, len(request), piece or len(request)):
                sock.sendall(request[start:start + (piece or len(request))])
                time.sleep(0.01 if piece else 0)
            while chunk := sock.recv(65536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
        return answer


def raw_recommend(port: int, history: list[str]) -> socket.socket:
    """A /recommend sent on a socket the test closes when it likes."""
    sock = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"history": history, "k": 3}).encode()
    sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


# ---------------------------------------------------------------- headers: 16 KiB


def test_request_headers_are_limited_to_16_kib(make_server):
    """20-100 KB of headers were answered: h11's cap counts only headers still incomplete after a read."""
    url, decoder, _ = make_server()
    body = json.dumps({"history": ["1"], "k": 3}).encode()

    def request(pad: int) -> bytes:
        return (b"POST /recommend HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                b"X-Pad: %s\r\nContent-Length: %d\r\n\r\n%s" % (b"a" * pad, len(body), body))

    assert exchange(port_of(url), request(15_000)).startswith(b"HTTP/1.1 200")
    for pad, piece in ((20_000, 0), (100_000, 0), (100_000, 8192)):  # at once (the guard's 431), or in pieces (h11's 400)
        answer = exchange(port_of(url), request(pad), piece)  # returns once the server closed the connection
        assert answer == b"" or answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), (pad, piece, answer[:200])
        if answer.startswith(b"HTTP/1.1 431"):
            assert answer.endswith(b'{"error": "headers: larger than the server\'s limit of 16384 bytes", '
                                   b'"field": "headers"}')
    assert len(decoder.calls) == 1  # only the 15 KB request was decoded


# ---------------------------------------------------------------- read timeout, keep-alive


def test_slow_or_idle_clients_are_cut_off(make_server):
    url, _, _ = make_server(limits=Limits(read_timeout_s=0.5), read_timeout_s=0.5)
    port = port_of(url)
    with socket.create_connection(("127.0.0.1", port)) as idle, \
            socket.create_connection(("127.0.0.1", port)) as trickling:
        trickling.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\n")
        assert (closed_within(trickling, 4, b"X-Slow: " + b"a" * 100) or 99) < 3  # headers, a byte per 0.1 s
        assert (closed_within(idle, 4) or 99) < 3  # never sent anything
    with socket.create_connection(("127.0.0.1", port)) as slow_body:
        slow_body.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"history\"")
        slow_body.settimeout(4)
        answer = b""
        while chunk := slow_body.recv(65536):  # until the server closes the connection
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b'"field": "body"' in answer
    assert httpx.get(url + "/health", timeout=TIMEOUT).status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s(make_server):
    url, _, _ = make_server(keep_alive_s=1)
    with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        closed_after = closed_within(sock, 5)  # reads the answer, then waits for the close
    assert closed_after is not None and 0.8 < closed_after < 3, closed_after


# ---------------------------------------------------------------- max connections


def test_idle_connections_cannot_push_out_health_or_a_request_in_flight(make_server):
    """The tester's 3,000 idle sockets against a cap of 256, scaled down to 300 against 20: the connection cap
    holds by closing the least recently active idle connection, never a new client or a request in flight."""
    url, decoder, _ = make_server(max_connections=20, read_timeout_s=30.0)  # read timeout out of the way
    decoder.gate.clear()
    busy = in_thread(post, url, "/recommend", {"history": ["1"], "k": 3})
    wait_for(lambda: len(decoder.calls) == 1)
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port_of(url)))) for _ in range(300)]
        wait_for(lambda: sum(map(is_closed, idle)) >= 300 - 19)  # 20 open at most, the busy one among them
        assert not any(map(is_closed, idle[-10:]))  # the oldest went first
        for _ in range(3):
            assert httpx.get(url + "/health", timeout=TIMEOUT).status_code == 200
    decoder.gate.set()
    busy[0].join(timeout=TIMEOUT)
    assert busy[1]["value"].status_code == 200


# ---------------------------------------------------------------- abandoned requests


class CountingCatalogue(Catalogue):
    resolved: list = []  # histories resolved so far (each request reaches the queue a moment later)

    def resolve(self, history, *args, **kwargs):
        CountingCatalogue.resolved.append(list(history))
        return super().resolve(history, *args, **kwargs)


def test_abandoned_requests_are_not_decoded_and_leave_their_places_to_live_ones(make_server):
    """22 clients leave while the decoder is busy, 4 stay: the next batch is the 4 live requests, whole (a batch
    was collected first and filtered after, so abandoned requests took live ones' places)."""
    CountingCatalogue.resolved.clear()
    url, decoder, recommender = make_server(max_batch_size=4, catalogue_cls=CountingCatalogue)
    items = list(recommender.catalogue.sid_index)
    decoder.gate.clear()
    first = in_thread(post, url, "/recommend", {"history": [items[0]], "k": 3})
    wait_for(lambda: len(decoder.calls) == 1)
    abandoned = [raw_recommend(port_of(url), [item]) for item in items[1:23]]
    wait_for(lambda: len(CountingCatalogue.resolved) == 23)
    time.sleep(0.3)  # queued
    for sock in abandoned:
        sock.close()
    wait_for(lambda: httpx.get(url + "/health", timeout=TIMEOUT).json()["client_left"] == 22)
    live = [in_thread(post, url, "/recommend", {"history": [item], "k": 3}) for item in items[23:27]]
    wait_for(lambda: len(CountingCatalogue.resolved) == 27)
    time.sleep(0.3)  # queued
    decoder.gate.set()
    for thread, box in (first, *live):
        thread.join(timeout=TIMEOUT)
        assert box["value"].status_code == 200
    prompts = [recommender.catalogue.prompt([item], recommender.prompt_style) for item in items]
    assert [sorted(call) for call in decoder.calls] == [prompts[:1], sorted(prompts[23:27])]
    health = httpx.get(url + "/health", timeout=TIMEOUT).json()
    assert health["dropped"] == 22 and health["requests"] == 5 and health["batches"] == 2


# ---------------------------------------------------------------- API docs, reload files


def test_api_docs_are_closed_unless_asked_for(make_server):
    docs = ("/docs", "/redoc", "/openapi.json")
    url, _, _ = make_server()
    for path in docs:
        assert_error(httpx.get(url + path, timeout=TIMEOUT), 404, None, "Not Found")
    url, _, _ = make_server(access=Access(api_docs=True))
    assert all(httpx.get(url + path, timeout=TIMEOUT).status_code == 200 for path in docs)
    url, _, _ = make_server(access=Access(api_token=API_TOKEN, api_docs=True))  # then behind the token
    for path in docs:
        assert_error(httpx.get(url + path, timeout=TIMEOUT), 401, None, "bearer token")
        assert httpx.get(url + path, headers={"authorization": f"Bearer {API_TOKEN}"}, timeout=TIMEOUT).status_code == 200


def test_reload_files_are_bounded_and_never_block(reload_server, index_path):
    url, root, reload, recommender = reload_server
    (root / "ok.index.json").write_text(index_path.read_text())
    with (root / "huge.json").open("wb") as f:
        f.truncate(MAX_CATALOGUE_FILE_BYTES + 1)  # sparse: no disk space, and never read
    os.mkfifo(root / "pipe.json")  # nobody writes it: reading it would hang the decoding thread
    assert_error(reload("huge.json"), 422, "sid_index_path", "larger than the server's limit of 1 GiB")
    assert_error(reload("ok.index.json", "huge.json"), 422, "item_meta_path", "larger than the server's limit")
    assert_error(reload("pipe.json"), 422, "sid_index_path", "file not found under the server's data root")
    assert_error(reload("ok.index.json", "pipe.json"), 422, "item_meta_path", "file not found")
    assert reload("ok.index.json").status_code == 200  # the server still works
