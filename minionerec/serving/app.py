"""The HTTP API of serve.py (FastAPI) and the queue that batches concurrent requests into one beam search.

Requests are resolved against the catalogue current when they arrive and carry that snapshot into
the queue; a `/catalogue/reload` swaps the recommender's catalogue for later requests only, so a
request in flight always finishes on the trie it was resolved with. The queue's worker takes the
first waiting request, waits up to `max_wait_s` for more (at most `max_batch_size`), and decodes
each catalogue's group with one `Recommender.decode` call in a worker thread (the event loop keeps
accepting requests meanwhile; they form the next batch). A catalogue reload runs on that same
thread between batches, so the tokenizer is never used by two threads at once.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from minionerec.data.formats import DataError
from minionerec.serving.recommender import Catalogue, Recommender, RequestError


@dataclass
class _Pending:
    prompt: str
    k: int
    catalogue: Catalogue
    future: asyncio.Future


class BatchQueue:
    """Collects (prompt, k, catalogue) submissions; `run_batch(prompts, ks, catalogue)` decodes a group."""

    def __init__(self, run_batch, max_batch_size: int = 8, max_wait_s: float = 0.005):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.run_batch, self.max_batch_size, self.max_wait_s = run_batch, max_batch_size, max_wait_s
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
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
        return await future

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            try:
                batch.append(self._queue.get_nowait() if remaining <= 0 else
                             await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]  # done: client gave up
            groups: dict[int, list[_Pending]] = {}
            for pending in batch:  # a reload between two arrivals splits the batch by catalogue
                groups.setdefault(id(pending.catalogue), []).append(pending)
            for group in groups.values():
                self.stats["batches"] += 1
                self.stats["requests"] += len(group)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
                try:
                    results = await loop.run_in_executor(self._executor, self.run_batch, [p.prompt for p in group],
                                                         [p.k for p in group], group[0].catalogue)
                except Exception as e:  # noqa: BLE001 - handed to every waiting request, which reports it
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(e)
                    continue
                for pending, result in zip(group, results):
                    if not pending.future.done():
                        pending.future.set_result(result)


class RecommendRequest(BaseModel):
    history: list[str | int] = Field(description="item ids or exact titles, oldest first")
    k: int = Field(10, description="items to return (1..the server's num_beams)")


class ReloadRequest(BaseModel):
    sid_index_path: str = Field(description="the new index.json (its SID tokens must be in the model's vocabulary)")
    item_meta_path: str = Field("", description="item.json with the titles (optional)")


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "field": field})


def create_app(recommender: Recommender, max_batch_size: int = 8, max_wait_s: float = 0.005,
               max_history: int = 10) -> FastAPI:
    """`max_history`: only the most recent items of a history enter the prompt (0 = all), like the training rows."""
    queue = BatchQueue(recommender.decode, max_batch_size, max_wait_s)
    reload_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(_app):
        await queue.start()
        yield
        await queue.stop()

    app = FastAPI(title="MiniOneRec", lifespan=lifespan)
    app.state.queue = queue

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError):
        return _error(422, exc.field, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = "body" if first.get("type") == "json_invalid" else ".".join(loc) or "body"
        return _error(422, field, f"{field}: {first.get('msg', 'invalid value')}")

    @app.get("/health")
    async def health():
        catalogue = recommender.catalogue
        return {"status": "ok", "items": catalogue.num_items, "distinct_sids": catalogue.trie.num_sids,
                "sid_index_path": catalogue.source, "num_beams": recommender.num_beams, **queue.stats}

    @app.post("/recommend")
    async def recommend(body: RecommendRequest):
        catalogue = recommender.catalogue  # this request's snapshot, whatever reloads happen meanwhile
        items = catalogue.resolve(body.history, "history", max_history)
        k = recommender.check_k(body.k, "k")
        ranked = await queue.submit(catalogue.prompt(items, recommender.prompt_style), k, catalogue)
        return {"history": items, "k": k,
                "items": [{"rank": rank, **rec.as_dict()} for rank, rec in enumerate(ranked, 1)]}

    @app.post("/catalogue/reload")
    async def reload(body: ReloadRequest):
        async with reload_lock:
            try:  # trie compiled off the event loop, between two batches; the swap is one assignment
                catalogue = await queue.call(recommender.reload_catalogue, body.sid_index_path, body.item_meta_path)
            except DataError as e:
                field = "item_meta_path" if body.item_meta_path and str(e).startswith(body.item_meta_path) \
                    else "sid_index_path"
                return _error(422, field, f"{field}: {e}")
        return {"status": "reloaded", "items": catalogue.num_items, "distinct_sids": catalogue.trie.num_sids,
                "sid_index_path": catalogue.source}

    return app
