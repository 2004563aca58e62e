"""Writes gathered into batches: while one batch is being written, what is handed in meanwhile waits
for the next, so a burst costs a few writes (and database-thread trips) instead of one each."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batches(Generic[Item, Result]):
    """``await batches.submit(item)``: ``item``'s result once ``write`` (a list of items in, a list of
    results in the same order out) has written the batch it went in. A batch that fails fails each of
    its items with the same exception, unless ``isolate(exception)`` says the failure may be one item's
    own: then each half of the batch is written again on its own, down to single items, so only the
    items that fail alone fail (one bad item among n costs about 2·log2(n) more writes, not n), and the
    others are written in the order they came. ``then(results)``, if given, runs after each batch's
    results are handed out (the written items' only) and before the next batch is written; ``idle()``
    when nothing is left. ``gather`` (seconds): how long a batch waits for more items before it is
    written, for writes nobody waits on (presence), where fewer, larger batches save more than the
    moment costs."""

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[list[Result]]],
        most: int = 500,
        then: Callable[[list[Result]], Awaitable[None]] | None = None,
        idle: Callable[[], None] | None = None,
        isolate: Callable[[Exception], bool] | None = None,
        gather: float = 0.0,
    ) -> None:
        self.write, self.most, self.then, self.idle, self.isolate = write, most, then, idle, isolate
        self.gather = gather
        self.waiting: list[tuple[Item, asyncio.Future]] = []
        self.task: asyncio.Task | None = None  # held: the loop keeps only weak references to tasks

    def submit(self, item: Item) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((item, future))
        if self.task is None or self.task.done():
            # A context of its own: the first submitter's may be a request's, which ends before the batches.
            self.task = loop.create_task(self._run(), context=contextvars.Context())
        return future

    async def _run(self) -> None:
        try:
            while self.waiting:
                if self.gather:
                    await asyncio.sleep(self.gather)
                batch, self.waiting = self.waiting[: self.most], self.waiting[self.most :]
                results = await self._write(batch)
                if self.then is not None and results:
                    await self.then(results)
        finally:
            if self.idle is not None and not self.waiting:
                self.idle()

    async def _write(self, batch: list[tuple[Item, asyncio.Future]]) -> list[Result]:
        """Write ``batch``, hand out its results or its failure; the results of the items written."""
        try:
            results = await self.write([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and self.isolate is not None and self.isolate(exc):
                half = len(batch) // 2
                return await self._write(batch[:half]) + await self._write(batch[half:])
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return []
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # done: its submitter stopped waiting (the item is written all the same)
                future.set_result(result)
        return results
