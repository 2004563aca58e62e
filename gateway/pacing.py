"""Live delivery of a room, coalesced while the room is over its rate.

An MQTT QoS 1 message over a device's or room's rate cannot be refused (MQTT 3.1.1 cannot tell the
device, and a PUBACK held back would fill the broker's in-flight window for every room), so it is
stored and acknowledged like any other, and only its live delivery slows down: while a room is
held, its stored batches wait and go out together, at most once every ``interval``, in order.
Readers get every message, in fewer and later deliveries; the history has them all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from . import metrics

Deliver = Callable[[str, list[dict]], Awaitable[None]]


class LivePacer:
    """``hold(room)`` before storing an over-rate post; ``send(room, events)`` for each stored batch."""

    def __init__(self, deliver: Deliver, interval: float = 1.0) -> None:
        self.deliver, self.interval = deliver, interval
        self._held_until: dict[str, float] = {}
        self._pending: dict[str, list[dict]] = {}
        self._flushers: dict[str, asyncio.Task] = {}
        self.coalesced = 0  # events delivered late, in a coalesced batch

    def hold(self, room: str) -> None:
        """The room's next ``interval`` of live delivery is coalesced."""
        self._held_until[room] = asyncio.get_running_loop().time() + self.interval

    async def send(self, room: str, events: list[dict]) -> None:
        """Deliver now, unless the room is held or has batches waiting: then after them, coalesced."""
        loop = asyncio.get_running_loop()
        pending = self._pending.get(room)
        if pending is None and self._held_until.get(room, 0.0) <= loop.time():
            self._held_until.pop(room, None)
            await self.deliver(room, events)
            return
        if pending is None:
            pending = self._pending[room] = []
        pending.extend(events)
        self.coalesced += len(events)
        metrics.live_coalesced.inc(len(events))
        if room not in self._flushers:
            self._flushers[room] = loop.create_task(self._flush(room, pending))

    async def _flush(self, room: str, pending: list[dict]) -> None:
        """Every ``interval``, what waits goes out in one delivery; done once nothing waits."""
        try:
            while pending:
                await asyncio.sleep(self.interval)  # pacing: one delivery an interval
                batch = pending[:]
                await self.deliver(room, batch)
                del pending[: len(batch)]
        finally:
            if self._pending.get(room) is pending:
                del self._pending[room]
            self._flushers.pop(room, None)
