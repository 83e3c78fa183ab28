"""The batching queue of serve.py: concurrent /recommend requests become one beam search per catalogue.

The worker takes the first waiting submission, waits up to `max_wait_s` for more (at most `max_batch_size`), and
decodes each catalogue's group with one `run_batch` call (`Recommender.decode`) on its one worker thread, so the
event loop keeps accepting requests meanwhile (they form the next batch). Other work on the model's tokenizer (a
catalogue reload) runs on that same thread between batches (`call`), so it is never used by two threads at once.
A submission whose client left or timed out before its batch was collected is skipped, never decoded.

May import the standard library and minionerec.serving.recommender (types only); nothing of HTTP.
"""
from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from minionerec.serving.recommender import Catalogue

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
