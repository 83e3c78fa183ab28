"""HTTP hardening of serve.py: the request limits and access rules (`Limits`, `Access`), the ASGI `Guard` that
enforces them before the app runs, and the uvicorn server around it (`guarded_h11`, `server_config`).

* `Guard` refuses request headers over MAX_HEADER_BYTES (431), checks the bearer token (every endpoint when
  `api_token` is set; `/catalogue/reload` always, with its own `reload_token`), admits at most `max_batch_size +
  max_queue` `/recommend` requests at once (more: 503 + Retry-After, before their body is read), and reads the body
  itself: at most `max_body_bytes` (413) within `read_timeout_s` (408); the app then reads the body it kept.
* `guarded_h11` (the uvicorn protocol of `server_config`) closes connections that do not deliver their request
  headers within `read_timeout_s`, and holds at most `max_connections`: a connection beyond them replaces the least
  recently active idle one (no request in flight), so idle sockets cannot lock clients out.

Its errors have the app's shape, `{"error": message, "field": name or null}`. May import the standard library,
uvicorn/h11 and minionerec.serving.queue; never the app (the app imports this).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from dataclasses import dataclass

from minionerec.serving.queue import BatchQueue

RECOMMEND_PATH = "/recommend"
RELOAD_PATH = "/catalogue/reload"
MAX_HEADER_BYTES = 16 * 1024  # a request's line and headers together (the guard answers 431 above it)


@dataclass(frozen=True)
class Limits:
    """Request limits of create_app (serve.py's flags of the same names)."""

    max_queue: int = 32  # /recommend requests that may wait beyond one full batch; more get 503 + Retry-After
    request_timeout_s: float = 30.0  # a /recommend not answered by then gets 503 (its queued decode is dropped)
    max_body_bytes: int = 256 * 1024  # larger request bodies get 413 before they are read
    max_history_items: int = 1000  # longer histories get 422 (only the last max_history enter the prompt)
    read_timeout_s: float = 10.0  # a request body must arrive within this (else 408)

    def __post_init__(self):
        if self.max_queue < 0 or self.max_body_bytes < 1 or self.max_history_items < 1:
            raise ValueError("max_queue must be >= 0, max_body_bytes and max_history_items >= 1")
        for name in ("request_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class Access:
    """Who may call what: `api_token` ("" = anyone) guards every endpoint; `/catalogue/reload` exists only
    with a `reload_token` (its bearer token) and loads files only under `data_root`; /docs, /redoc and
    /openapi.json exist only with `api_docs` (they describe every endpoint: closed unless asked for)."""

    api_token: str = ""
    reload_token: str = ""  # "" = no /catalogue/reload endpoint
    data_root: str = ""  # reload paths resolve under here (required with a reload token)
    api_docs: bool = False  # serve /docs, /redoc and /openapi.json (behind api_token like every endpoint)

    def __post_init__(self):
        if self.reload_token and not self.data_root:
            raise ValueError("a reload token needs a data_root")


# ---------------------------------------------------------------- the ASGI guard

def _error_bytes(message: str, field: str | None) -> bytes:
    return json.dumps({"error": message, "field": field}).encode()


async def _send_error(send, status: int, message: str, field: str | None = None, headers: dict | None = None,
                      close: bool = False) -> None:
    body = _error_bytes(message, field)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), str(v).encode()) for k, v in (headers or {}).items()]
    if close:  # the client may still be sending a body we will not read: end the connection
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def _read_body(receive, limit: int, timeout_s: float) -> bytes:
    """The whole request body: _TooLarge past `limit` bytes, TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    chunks, size = [], 0
    while True:
        message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """An ASGI receive that hands out `body` once, then the real receive (which reports the disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _bearer(headers) -> bytes:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


def _head_bytes(scope) -> int:
    """Size of the request line and headers: method, target and each "name: value\r\n"."""
    target = len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"])
    return target + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class Guard:
    """ASGI middleware: header size, token, admission of /recommend, body size and read time, before the app runs."""

    def __init__(self, app, queue: BatchQueue, limits: Limits, access: Access, counters: dict):
        self.app, self.queue, self.limits, self.access, self.counters = app, queue, limits, access, counters
        self.capacity = queue.max_batch_size + limits.max_queue
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _head_bytes(scope) > MAX_HEADER_BYTES:  # h11 caps only headers that arrive in several reads
            self.counters["too_large"] += 1
            return await _send_error(send, 431, f"headers: larger than the server's limit of {MAX_HEADER_BYTES} "
                                                "bytes", "headers", close=True)
        path = scope["path"]
        required = self.access.reload_token if path == RELOAD_PATH and self.access.reload_token \
            else self.access.api_token
        if required and not hmac.compare_digest(_bearer(scope["headers"]), required.encode()):
            self.counters["unauthorized"] += 1
            return await _send_error(send, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                     headers={"www-authenticate": "Bearer"}, close=True)
        admitted = path == RECOMMEND_PATH
        if admitted:
            if self.in_flight >= self.capacity:
                self.counters["shed"] += 1
                retry = self.queue.retry_after_s(self.in_flight)
                return await _send_error(send, 503, f"server busy: {self.in_flight} requests in progress "
                                                    f"(the queue is full); retry after {retry} s",
                                         headers={"retry-after": retry}, close=True)
            self.in_flight += 1
        try:
            limit = self.limits.max_body_bytes
            declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                self.counters["too_large"] += 1
                return await _send_error(send, 413, f"body: larger than the server's limit of {limit} bytes",
                                         "body", close=True)
            try:
                body = await _read_body(receive, limit, self.limits.read_timeout_s)
            except _TooLarge:
                self.counters["too_large"] += 1
                return await _send_error(send, 413, f"body: larger than the server's limit of {limit} bytes",
                                         "body", close=True)
            except TimeoutError:
                self.counters["read_timeouts"] += 1
                return await _send_error(send, 408, f"body: not received within {self.limits.read_timeout_s:g} s",
                                         "body", close=True)
            except _ClientGone:
                return None
            await self.app(scope, _replay(body, receive), send)
        finally:
            if admitted:
                self.in_flight -= 1


# ---------------------------------------------------------------- the HTTP server

def guarded_h11(read_timeout_s: float, max_connections: int):
    """uvicorn's h11 protocol, plus: request headers must arrive within `read_timeout_s` of the connection
    opening (or of a kept-alive request's first byte), else the connection is closed; at most `max_connections`
    are open: a new one beyond them closes the least recently active idle one (no request in flight), or itself
    when every connection has a request in flight. (uvicorn itself times out only idle keep-alive connections.)"""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _header_timer = None
        _last_active = 0.0  # loop time of the connection's opening or last received bytes

        def connection_made(self, transport):
            super().connection_made(transport)
            self._last_active = self.loop.time()
            self._arm()
            open_now = [c for c in self.connections if not c.transport.is_closing()]
            if len(open_now) > max_connections:
                # closing the newcomer instead would let a few hundred idle sockets lock every client out
                idle = [c for c in open_now if c is not self and c.conn.their_state is h11.IDLE]
                min(idle, key=lambda c: c._last_active, default=self).transport.close()

        def _arm(self):
            self._disarm()
            self._header_timer = self.loop.call_later(read_timeout_s, self._headers_too_slow)

        def _disarm(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self):
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data):
            self._last_active = self.loop.time()
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first byte of a request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def server_config(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
                  keep_alive_s: int = 5, read_timeout_s: float = 10.0, max_connections: int = 256):
    """The uvicorn.Config serve.py runs: h11 with header read timeout and connection cap, keep-alive timeout,
    header size limit (headers still arriving past MAX_HEADER_BYTES: h11's 400; complete ones: the guard's 431)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=guarded_h11(read_timeout_s,
                          max_connections), timeout_keep_alive=keep_alive_s,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, server_header=False)
