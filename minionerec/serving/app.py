"""The HTTP API of serve.py (FastAPI): the routes, their strict request bodies and the error shape.

Requests are resolved against the catalogue current when they arrive and carry that snapshot into the batching
queue (minionerec.serving.queue); a `/catalogue/reload` (minionerec.serving.reload) swaps the recommender's
catalogue for later requests only, so a request in flight always finishes on the trie it was resolved with.
Every request first passes the guard (minionerec.serving.guard: headers, token, admission, body size and time).

* bodies are parsed strictly (pydantic strict mode, JSON only: `true` and `12.0` are not item ids, `"5"` is not an
  int) and resolved against the catalogue in a worker thread, never on the event loop;
* a `/recommend` whose client disconnects while queued is dropped before decoding; one not answered within
  `request_timeout_s` gets a 503;
* `/catalogue/reload` exists only when a reload token is configured;
* /docs, /redoc and /openapi.json exist only with `Access.api_docs` (and then need the API token like the rest).

Every error, from the guard, the routes or FastAPI itself (404, 405), is `{"error": message, "field": name or
null}`. May import the other minionerec.serving modules; none of them imports this one.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from minionerec.serving.guard import RECOMMEND_PATH, RELOAD_PATH, Access, Guard, Limits
from minionerec.serving.queue import BatchQueue
from minionerec.serving.recommender import Catalogue, Recommender, RequestError
from minionerec.serving.reload import display_source, load_reload_catalogue

MAX_ENTRY_CHARS = 4096  # one history entry (an item id or a title)
MAX_PATH_CHARS = 4096  # a reload path


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


# ---------------------------------------------------------------- errors, and a client that leaves

def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "field": field}, headers=headers)


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

    app.add_middleware(Guard, queue=queue, limits=limits, access=access, counters=counters)
    return app


