"""The HTTP API of serve.py (FastAPI) and the queue that batches concurrent requests into one beam search.

Requests are resolved against the catalogue current when they arrive and carry that snapshot into
the queue; a `/catalogue/reload` swaps the recommender's catalogue for later requests only, so a
request in flight always finishes on the trie it was resolved with. The queue's worker takes the
first waiting request, waits up to `max_wait_s` for more (at most `max_batch_size`), and decodes
each catalogue's group with one `Recommender.decode` call in a worker thread (the event loop keeps
accepting requests meanwhile; they form the next batch). A catalogue reload runs on that same
thread between batches, so the tokenizer is never used by two threads at once.

Limits and access (`Limits`, `Access`), enforced before any work is done for a request:

* an ASGI guard in front of the app refuses request headers over MAX_HEADER_BYTES (431), checks the bearer
  token (every endpoint when `api_token` is set; `/catalogue/reload` always, with its own `reload_token`),
  admits at most `max_batch_size + max_queue` `/recommend` requests at once (more: 503 + Retry-After, before
  their body is read), and reads the body itself: at most `max_body_bytes` (413) within `read_timeout_s` (408);
* bodies are parsed strictly (pydantic strict mode, JSON only: `true` and `12.0` are not item ids, `"5"`
  is not an int) and resolved against the catalogue in a worker thread, never on the event loop;
* a `/recommend` whose client disconnects while queued is dropped before decoding; one not answered
  within `request_timeout_s` gets a 503;
* `/catalogue/reload` exists only when a reload token is configured, and loads regular files of at most
  MAX_CATALOGUE_FILE_BYTES only under `data_root`; its errors name the field and the kind of problem, never a
  server path or file contents;
* /docs, /redoc and /openapi.json exist only with `Access.api_docs` (and then need the API token like the rest);
* `guarded_h11` (the uvicorn protocol of `server_config`) closes connections that do not deliver their
  request headers within `read_timeout_s`, and holds at most `max_connections`: a connection beyond them
  replaces the least recently active idle one (no request in flight), so idle sockets cannot lock clients out.

Every error, from the guard, the routes or FastAPI itself (404, 405), is `{"error": message, "field": name
or null}`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from minionerec.data.formats import load_item_meta, load_sid_index, sid_string
from minionerec.serving.recommender import (MAX_CATALOGUE_FILE_BYTES, Catalogue, Recommender, RequestError,
                                             build_catalogue)

RECOMMEND_PATH = "/recommend"
RELOAD_PATH = "/catalogue/reload"
MAX_ENTRY_CHARS = 4096  # one history entry (an item id or a title)
MAX_PATH_CHARS = 4096  # a reload path
MAX_HEADER_BYTES = 16 * 1024  # a request's line and headers together (the guard answers 431 above it)


@dataclass
class _Pending:
    prompt: str
    k: int
    catalogue: Catalogue
    future: asyncio.Future


class BatchQueue:
    """Collects (prompt, k, catalogue) submissions; `run_batch(prompts, ks, catalogue)` decodes a group.

    A submission whose future is already done when its batch is collected (its client left, or it timed
    out) is dropped without decoding and counted in `dropped`."""

    def __init__(self, run_batch, max_batch_size: int = 8, max_wait_s: float = 0.005):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.run_batch, self.max_batch_size, self.max_wait_s = run_batch, max_batch_size, max_wait_s
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        self.dropped = 0  # submissions abandoned before their batch was decoded
        self.mean_batch_s = 0.0  # moving average of one decode call (for Retry-After)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beam-search")  # one model, one decoder
        self._task = asyncio.create_task(self._worker())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def call(self, fn, *args):
        """Run fn(*args) on the decoding thread, between batches (the tokenizer is not shared across threads)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, prompt: str, k: int, catalogue: Catalogue):
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prompt, k, catalogue, future))
        return await future  # cancelled with the caller: the worker then skips it

    def retry_after_s(self, waiting: int) -> int:
        """Seconds until `waiting` queued requests are likely decoded (at least 1, at most 60)."""
        batches = math.ceil(max(waiting, 1) / self.max_batch_size)
        return int(min(60, max(1, math.ceil(batches * self.mean_batch_s))))

    async def _take(self, deadline: float | None) -> _Pending | None:
        """The next queued submission still waiting for its answer, or None at loop time `deadline` (None: wait
        as long as it takes). Abandoned ones (future done: the client left or timed out) are counted in `dropped`
        and skipped here, so they are never decoded and never take a live request's place in a batch."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                if deadline is None:
                    pending = await self._queue.get()
                elif deadline <= loop.time():
                    pending = self._queue.get_nowait()
                else:
                    pending = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                return None
            if not pending.future.done():
                return pending
            self.dropped += 1

    async def _collect(self) -> list[_Pending]:
        """The first live submission, then the live ones that arrive within max_wait_s (at most max_batch_size)."""
        batch = [await self._take(None)]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch_size and (pending := await self._take(deadline)):
            batch.append(pending)
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            groups: dict[int, list[_Pending]] = {}
            for pending in await self._collect():  # a reload between two arrivals splits the batch by catalogue
                groups.setdefault(id(pending.catalogue), []).append(pending)
            for collected in groups.values():
                group = [p for p in collected if not p.future.done()]  # a client may leave while another group decodes
                self.dropped += len(collected) - len(group)
                if not group:
                    continue
                self.stats["batches"] += 1
                self.stats["requests"] += len(group)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self.run_batch, [p.prompt for p in group],
                                                         [p.k for p in group], group[0].catalogue)
                except Exception as e:  # noqa: BLE001 - handed to every waiting request, which reports it
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(e)
                    continue
                finally:
                    elapsed = time.perf_counter() - started
                    self.mean_batch_s = elapsed if not self.mean_batch_s else 0.8 * self.mean_batch_s + 0.2 * elapsed
                for pending, result in zip(group, results):
                    if not pending.future.done():
                        pending.future.set_result(result)


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


# ---------------------------------------------------------------- request bodies (strict JSON)

HistoryEntry = Union[Annotated[str, StringConstraints(strict=True, max_length=MAX_ENTRY_CHARS)], StrictInt]
ReloadPathField = Annotated[str, StringConstraints(strict=True, max_length=MAX_PATH_CHARS)]


def recommend_model(max_history_items: int) -> type[BaseModel]:
    class RecommendRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        history: list[HistoryEntry] = Field(max_length=max_history_items,
                                            description="item ids (strings or integers) or exact titles, oldest first")
        k: StrictInt = Field(10, description="items to return (1..the server's num_beams)")

    return RecommendRequest


class ReloadRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    sid_index_path: ReloadPathField = Field(description="the new index.json, relative to the server's data root "
                                                        "(its SID tokens must be in the model's vocabulary)")
    item_meta_path: ReloadPathField = Field("", description="item.json with the titles (optional), under the data root")


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {float: "a non-integer number", int: "an integer", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def validation_message(errors: list[dict]) -> tuple[str, str]:
    """pydantic errors -> (field, message) of the first: the top-level field, and a message that names the
    position (`history[3]`) and the problem, never echoing the input."""
    first = errors[0]
    loc = [part for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        reason = str(first.get("msg", "invalid JSON")).removeprefix("Invalid JSON: ")
        return "body", f"body: not valid JSON (UTF-8) ({reason})"
    if not loc:
        return "body", "body: expected a JSON object"
    field = str(loc[0])
    path = field + "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))
    entry_errors = [e for e in errors if [p for p in e.get("loc", ()) if p != "body"][:2] == loc[:2]]
    if field == "history" and len(loc) >= 2 and isinstance(loc[1], int):
        if any(e.get("type") == "string_too_long" for e in entry_errors):
            return field, f"{path}: longer than {MAX_ENTRY_CHARS} characters"
        return field, f"{path}: expected an item id or title (a string or an integer), got {_json_type(first.get('input'))}"
    message = str(first.get("msg", "invalid value")).replace("valid array", "valid list")
    return field, f"{path}: {message}"


def _body_schema(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


# ---------------------------------------------------------------- errors

def _error_bytes(message: str, field: str | None) -> bytes:
    return json.dumps({"error": message, "field": field}).encode()


def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "field": field}, headers=headers)


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


class _Guard:
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


async def _unless_client_leaves(receive, work):
    """Await `work`; when the client disconnects first, cancel it (its queued decode is then skipped) and
    return None."""
    task = asyncio.ensure_future(work)

    async def client_left():
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        return None
    finally:
        watcher.cancel()
        task.cancel()


# ---------------------------------------------------------------- catalogue reload

def confined(root: Path, given: str, field: str) -> Path:
    """`given` (relative to `root`, or absolute) as an existing regular file under `root`, symlinks resolved;
    every failure (missing, outside, a directory or FIFO, unreadable, a bad name) is the same RequestError, so
    the answer reveals nothing about the filesystem. A file under `root` over MAX_CATALOGUE_FILE_BYTES is refused
    before it is read."""
    not_found = RequestError(field, f"{field}: file not found under the server's data root")
    if not given or "\x00" in given:
        raise not_found
    try:
        path = (root / given).resolve(strict=True)
        if not path.is_relative_to(root) or not path.is_file():
            raise not_found
        too_large = path.stat().st_size > MAX_CATALOGUE_FILE_BYTES
    except (OSError, ValueError, RuntimeError):
        raise not_found from None
    if too_large:
        raise RequestError(field, f"{field}: larger than the server's limit of {MAX_CATALOGUE_FILE_BYTES >> 30} GiB")
    return path


def load_reload_catalogue(recommender: Recommender, root: Path, sid_index_path: str, item_meta_path: str) -> Catalogue:
    """A new catalogue from files under `root`, checked like the server's own: RequestErrors naming the field and
    the problem, never a path or the files' contents."""
    index_file = confined(root, sid_index_path, "sid_index_path")
    meta_file = confined(root, item_meta_path, "item_meta_path") if item_meta_path else None
    try:
        sid_index = load_sid_index(index_file)
    except (ValueError, OSError, RecursionError):
        raise RequestError("sid_index_path", "sid_index_path: not a usable SID index (expected a non-empty UTF-8 "
                                             "JSON object: item id -> list of '<...>' SID tokens, all of one "
                                             "length)") from None
    try:
        item_meta = load_item_meta(meta_file) if meta_file else None
    except (ValueError, OSError, RecursionError):
        raise RequestError("item_meta_path", "item_meta_path: not a usable item.json (expected a non-empty UTF-8 "
                                             "JSON object: item id -> {\"title\": ...})") from None
    distinct = len({sid_string(tokens) for tokens in sid_index.values()})
    if distinct < recommender.num_beams:
        raise RequestError("sid_index_path", f"sid_index_path: the index has {distinct} distinct SIDs, fewer than "
                                             f"the server's {recommender.num_beams} beams")
    vocab = recommender.tokenizer.get_vocab()
    missing = {t for tokens in sid_index.values() for t in tokens if t not in vocab}
    if missing:
        raise RequestError("sid_index_path", f"sid_index_path: {len(missing)} SID token(s) are not single tokens of "
                                             "the model's vocabulary (add them with python -m rq.add_items "
                                             "--base_model ...)")
    try:
        # the server's train counts carry over: a shared SID is shown as the same item as before the reload
        return build_catalogue(sid_index, item_meta, recommender.tokenizer, recommender.catalogue.trie.device,
                               sid_index_path, recommender.catalogue.target_counts)
    except ValueError:
        raise RequestError("sid_index_path", "sid_index_path: no SID trie can be built from this index for this "
                                             "model") from None


def display_source(source: str, root: Path | None) -> str:
    """A catalogue's path as /health shows it: relative to the data root, else the file name only."""
    path = Path(source).resolve()
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root))
    return path.name


# ---------------------------------------------------------------- the app

def create_app(recommender: Recommender, max_batch_size: int = 8, max_wait_s: float = 0.005,
               max_history: int = 10, limits: Limits | None = None, access: Access | None = None):
    """`max_history`: only the most recent items of a history enter the prompt (0 = all), like the training rows.

    `limits` and `access`: see their classes (defaults: the serve.py defaults, no token, no reload endpoint).
    The app's state holds `queue` and `counters` (shown by /health)."""
    limits, access = limits or Limits(), access or Access()
    queue = BatchQueue(recommender.decode, max_batch_size, max_wait_s)
    reload_lock = asyncio.Lock()
    root = Path(access.data_root).resolve() if access.data_root else None
    if root is not None:  # never show the server's own paths
        recommender.catalogue = replace(recommender.catalogue,
                                        source=display_source(recommender.catalogue.source, root))
    counters = {"shed": 0, "timed_out": 0, "client_left": 0, "too_large": 0, "read_timeouts": 0, "unauthorized": 0}
    RecommendRequest = recommend_model(limits.max_history_items)

    @asynccontextmanager
    async def lifespan(_app):
        await queue.start()
        yield
        await queue.stop()

    closed_docs = {} if access.api_docs else dict(docs_url=None, redoc_url=None, openapi_url=None)
    app = FastAPI(title="MiniOneRec", lifespan=lifespan, **closed_docs)
    app.state.queue, app.state.counters = queue, counters

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError):
        return _error(422, exc.field, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        field, message = validation_message(exc.errors())
        return _error(422, field, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, None, f"{exc.detail}: {request.method} {request.url.path}"[:200], exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _exc: Exception):  # logged by uvicorn; no details to the client
        return _error(500, None, "internal server error")

    def prepare(body: bytes, catalogue: Catalogue) -> tuple[list[str], int, str]:
        """Parse, validate and resolve one /recommend body (in a worker thread: never blocks the event loop)."""
        try:
            request = RecommendRequest.model_validate_json(body)
        except ValidationError as e:
            raise RequestError(*validation_message(e.errors(include_url=False))) from None
        items = catalogue.resolve(request.history, "history", max_history)
        k = recommender.check_k(request.k, "k")
        return items, k, catalogue.prompt(items, recommender.prompt_style)

    @app.get("/health")
    async def health():
        catalogue = recommender.catalogue
        return {"status": "ok", "items": catalogue.num_items, "distinct_sids": catalogue.trie.num_sids,
                "sid_index_path": catalogue.source, "num_beams": recommender.num_beams, **queue.stats,
                "dropped": queue.dropped, **counters}

    @app.post(RECOMMEND_PATH, openapi_extra=_body_schema(RecommendRequest))
    async def recommend(request: Request):
        body = await request.body()  # already read (and capped) by the guard
        catalogue = recommender.catalogue  # this request's snapshot, whatever reloads happen meanwhile
        try:
            async with asyncio.timeout(limits.request_timeout_s):
                items, k, prompt = await asyncio.to_thread(prepare, body, catalogue)
                ranked = await _unless_client_leaves(request.receive, queue.submit(prompt, k, catalogue))
        except TimeoutError:
            counters["timed_out"] += 1
            retry = queue.retry_after_s(max_batch_size)
            return _error(503, None, f"not answered within the server's {limits.request_timeout_s:g} s request "
                                     f"timeout; retry after {retry} s", {"retry-after": str(retry)})
        if ranked is None:
            counters["client_left"] += 1
            return _error(499, None, "the client closed the connection")  # nobody reads it
        return {"history": items, "k": k,
                "items": [{"rank": rank, **rec.as_dict()} for rank, rec in enumerate(ranked, 1)]}

    if access.reload_token:
        @app.post(RELOAD_PATH, openapi_extra=_body_schema(ReloadRequest))
        async def reload(request: Request):
            try:
                body = ReloadRequest.model_validate_json(await request.body())
            except ValidationError as e:
                field, message = validation_message(e.errors(include_url=False))
                return _error(422, field, message)
            async with reload_lock:  # trie compiled off the event loop, between two batches
                catalogue = await queue.call(load_reload_catalogue, recommender, root, body.sid_index_path,
                                             body.item_meta_path)
                recommender.catalogue = catalogue  # the swap is one assignment
            return {"status": "reloaded", "items": catalogue.num_items, "distinct_sids": catalogue.trie.num_sids,
                    "sid_index_path": catalogue.source}

    app.add_middleware(_Guard, queue=queue, limits=limits, access=access, counters=counters)
    return app


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
