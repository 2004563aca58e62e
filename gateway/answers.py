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
    kept: the next caller asks again."""

    def __init__(self, ask: Callable[..., Awaitable[T]], seconds: float, size: int = 10_000) -> None:
        self.ask, self.seconds, self.size = ask, seconds, size
        self.answers: dict[tuple, tuple[T, float]] = {}
        self.asking: dict[tuple, asyncio.Task] = {}

    async def __call__(self, *key: Hashable) -> T:
        found = self.answers.get(key)
        if found is not None and found[1] > time.monotonic():
            return found[0]
        loop = asyncio.get_running_loop()
        asking = self.asking.get(key)
        if asking is None:
            # A context of its own: it outlives the caller that started it (a request that ends).
            asking = self.asking[key] = loop.create_task(self._ask(key), context=contextvars.Context())
        return await asyncio.shield(asking)  # a caller that gives up does not cancel it for the others

    async def _ask(self, key: tuple) -> T:
        try:
            answer = await self.ask(*key)
            if len(self.answers) >= self.size:
                self.answers.clear()
            self.answers[key] = (answer, time.monotonic() + self.seconds)
            return answer
        finally:
            if self.asking.get(key) is asyncio.current_task():
                del self.asking[key]
