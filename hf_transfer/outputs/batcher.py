"""Request batching for `hf-transfer serve`: one asyncio worker gathers concurrent requests into one model call.

Requests wait in a queue; the worker takes what is waiting up to `max_batch_size` inputs (waiting at
most `timeout_s` after the first for more), runs the model in a thread, one call at a time, and hands
each request its own rows back (its top_k labels). Free of any web framework: the server awaits
`Batcher.submit`, the tests drive it with a stand-in model.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from hf_transfer.errors import first_line

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the server answers with `status` and {"error": message}: 4xx for bad input, 500 when the
    model fails on an input that passed the checks."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    items: list[Any]
    top_k: int
    future: asyncio.Future


@dataclass
class Batcher:
    """One worker gathers waiting requests into one model call of at most `max_batch_size` inputs (a
    request with more inputs goes alone), waiting up to `timeout_s` for more once the first has come."""

    call: Callable[[list[Any]], list[list[dict[str, Any]]]]
    max_batch_size: int
    timeout_s: float
    pending: deque = field(default_factory=deque)
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "batches": 0, "items": 0, "largest_batch": 0})

    def __post_init__(self):
        self.arrived = asyncio.Event()

    async def submit(self, items: list[Any], top_k: int) -> list[list[dict[str, Any]]]:
        job = Job(items, top_k, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        self.arrived.set()
        return await job.future

    def _waiting(self) -> int:
        return sum(len(job.items) for job in self.pending)

    async def _gather(self) -> list[Job]:
        while not self.pending:
            self.arrived.clear()
            await self.arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while self._waiting() < self.max_batch_size and (left := deadline - loop.time()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                break
        jobs = [self.pending.popleft()]
        size = len(jobs[0].items)
        while self.pending and size + len(self.pending[0].items) <= self.max_batch_size:
            size += len(self.pending[0].items)
            jobs.append(self.pending.popleft())
        return jobs

    async def run(self) -> None:
        while True:
            jobs = await self._gather()
            try:
                await self._answer(jobs)
            except Exception as err:  # noqa: BLE001 - a bug answers these requests with 500; the worker goes on
                log.exception("serve: answering a batch failed")
                for job in jobs:
                    _settle(job.future, exception=RequestError(500, f"internal error: {first_line(err)}"))

    async def _answer(self, jobs: list[Job]) -> None:
        items = [item for job in jobs for item in job.items]
        try:
            rows = await asyncio.to_thread(self.call, items)
        except Exception as err:  # noqa: BLE001 - one request's failure must not stop the worker
            if len(jobs) > 1:  # answer each alone: one bad input does not fail the requests batched with it
                for job in jobs:
                    await self._answer([job])
                return
            log.exception("serve: the pipeline failed")
            _settle(jobs[0].future, exception=RequestError(500, f"the model failed on this input: {first_line(err)}"))
            return
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        self.stats["items"] += len(items)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        start = 0
        for job in jobs:
            mine = rows[start:start + len(job.items)]
            start += len(job.items)
            _settle(job.future, result=[_top(row, job.top_k) for row in mine])


def _settle(future: asyncio.Future, result: Any = None, exception: Exception | None = None) -> None:
    if future.done():  # the client went away
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


def _top(row: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """The row's top_k labels (classification rows come sorted by score), JSON-ready; other rows whole."""
    row = [{k: _plain(v) for k, v in r.items()} for r in row]
    return row[:top_k] if row and "label" in row[0] else row


def _plain(value: Any) -> Any:
    """numpy scalars (entity scores) as Python numbers."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value
