"""A room's messages to one reader, in id order and each once, whatever the layer did on the way."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable

from gateway import rooms

logger = logging.getLogger(__name__)

Deliver = Callable[[int, str], Awaitable[None]]


async def reached(room: str, history: list[dict], after: int | None) -> int:
    """The id a reader has reached once sent ``history`` (read after id ``after``, or the newest)."""
    if history:
        return history[-1]["id"]
    return after if after is not None else await rooms.last_id(room)


_readings: dict[tuple[str, int], asyncio.Task] = {}


async def read_missed(room: str, after: int) -> list[tuple[int, str]]:
    """The (id, JSON text) of the room's messages after id ``after``. A message lost on the layer is
    missed by every reader of the room in this process at once: they share one reading, serialised once."""
    key = (room, after)
    reading = _readings.get(key)
    if reading is None or reading.get_loop() is not asyncio.get_running_loop():

        async def read() -> list[tuple[int, str]]:
            messages = await rooms.history(room, after=after, limit=rooms.CATCH_UP_LIMIT)
            return [(message["id"], rooms.to_json(message)) for message in messages]

        reading = _readings[key] = asyncio.get_running_loop().create_task(read(), context=contextvars.Context())
        reading.add_done_callback(lambda done: _readings.pop(key, None) if _readings.get(key) is done else None)
    return await asyncio.shield(reading)  # one reader leaving does not cancel the others' reading


class RoomStream:
    """Decides what a reader gets next. Ids in a room are contiguous, so a live message whose id is
    not the next one means something went missing (a layer that dropped it, a Redis restart, another
    process's message still on its way): what is missing is read from the history, in order, in a task
    of the stream's own, while live messages wait their turn.

    Live messages are held from the start until ``begin()`` says what the reader already has.
    """

    def __init__(self, room: str, deliver: Deliver) -> None:
        self.room, self.deliver = room, deliver
        self.last_sent = 0
        self.held: list[tuple[int, str]] | None = []  # None: live messages go straight through
        self.filler: asyncio.Task | None = None
        self.begun = False

    async def begin(self, last_sent: int) -> None:
        """The reader has everything up to ``last_sent`` (from the history): go live."""
        self.last_sent, self.begun = last_sent, True
        await self._release(fill_gaps=True)

    async def push(self, message_id: int, text: str) -> None:
        """A live message, as the layer brought it."""
        if self.held is not None:
            self.held.append((message_id, text))
        elif message_id == self.last_sent + 1:
            self.last_sent = message_id
            await self.deliver(message_id, text)
        elif message_id > self.last_sent:
            self.held = [(message_id, text)]
            self._fill()
        # else: already sent (history, a filled gap, or a late duplicate)

    def close(self) -> None:
        if self.filler is not None:
            self.filler.cancel()

    def _fill(self) -> None:
        self.filler = asyncio.get_running_loop().create_task(self._read_missed())

    async def _read_missed(self) -> None:
        try:
            missed = await read_missed(self.room, self.last_sent)
        except Exception:  # the database is away: deliver what is here rather than nothing
            logger.exception("Could not read %s's history after #%s", self.room, self.last_sent)
            missed = []
        for message_id, text in missed:
            if message_id > self.last_sent:
                self.last_sent = message_id
                await self.deliver(message_id, text)
        await self._release(fill_gaps=bool(missed))  # no progress: no second reading

    async def _release(self, fill_gaps: bool) -> None:
        """Deliver the held messages in order (new ones join the queue meanwhile). A gap is read from
        the history, unless a reading has just failed: then what is here is delivered anyway."""
        while self.held:
            message_id, text = self.held[0]
            if message_id > self.last_sent + 1 and fill_gaps:
                return self._fill()
            del self.held[0]
            if message_id > self.last_sent:
                self.last_sent = message_id
                await self.deliver(message_id, text)
        self.held = None
