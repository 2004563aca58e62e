"""Answers to a question about a room, kept for a moment: a busy room asks the database now and then,
not on every post or join. A change in the database shows within ``seconds``."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class RecentAnswers(Generic[T]):
    """``await answers(*key)``: ``ask(*key)``'s answer, asked again once it is ``seconds`` old. While an
    answer is being looked up, everyone who asks the same waits for that one lookup. Failures are not
    kept: the next caller asks again.

    An answer asked for in the second half of its life is looked up again meanwhile (refreshed ahead),
    so in a busy room nobody waits for the lookup: the message that found it expired waited for a trip
    to the database thread, behind a batch's commit (~20 ms on a loaded adapter), every ``seconds``."""

    def __init__(self, ask: Callable[..., Awaitable[T]], seconds: float, size: int = 10_000) -> None:
        self.ask, self.seconds, self.size = ask, seconds, size
        self.answers: dict[tuple, tuple[T, float]] = {}
        self.asking: dict[tuple, asyncio.Task] = {}

    async def __call__(self, *key: Hashable) -> T:
        found = self.answers.get(key)
        now = time.monotonic()
        if found is not None and found[1] > now:
            if found[1] - now < self.seconds / 2 and key not in self.asking:
                self._start(key).add_done_callback(_ignore_failure)  # refreshed ahead: nobody waits for it
            return found[0]
        asking = self.asking.get(key) or self._start(key)
        return await asyncio.shield(asking)  # a caller that gives up does not cancel it for the others

    def _start(self, key: tuple) -> asyncio.Task:
        # A context of its own: it outlives the caller that started it (a request that ends).
        self.asking[key] = asyncio.get_running_loop().create_task(self._ask(key), context=contextvars.Context())
        return self.asking[key]

    async def _ask(self, key: tuple) -> T:
        started = time.monotonic()
        try:
            answer = await self.ask(*key)
            if len(self.answers) >= self.size:
                self.answers.clear()
            self.answers[key] = (answer, started + self.seconds)  # as old as the question, not the answer
            return answer
        finally:
            if self.asking.get(key) is asyncio.current_task():
                del self.asking[key]


def _ignore_failure(task: asyncio.Task) -> None:
    """A refresh ahead that failed is retried by the next caller once the answer it had is too old."""
    if not task.cancelled():
        task.exception()
