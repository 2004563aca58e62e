"""A room's messages in id order and each once, whatever the layer did on the way.

Used twice: once per room in each process's hub (fanout/hub.py), which puts the layer's batches in
order for all the room's readers there at once, and once per reader, for where that reader's history
ends and live messages begin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .outgoing import Outgoing

logger = logging.getLogger(__name__)

# Messages in id order, without gaps unless the history could not be read; it must not wait on anything.
Deliver = Callable[[list[Outgoing]], None]
# The room's messages after an id, from the history (``Hub.read_missed``: one reading for all who missed them).
ReadMissed = Callable[[str, int], Awaitable[list[Outgoing]]]


class RoomStream:
    """Decides what is delivered next. Ids in a room are contiguous, so a message whose id is not the
    next one means something is missing (a layer that dropped it, a Redis restart, another process's
    message still on its way): what is missing is read from the history, in order, in a task of the
    stream's own, while later messages wait their turn.

    Messages are held from the start until ``begin()`` says where delivery starts. Everything here is
    synchronous but the history reading: a batch that is next in line goes straight to ``deliver``.
    """

    __slots__ = ("room", "deliver", "read_missed", "last_sent", "held", "filler", "begun")

    def __init__(self, room: str, deliver: Deliver, read_missed: ReadMissed) -> None:
        self.room, self.deliver, self.read_missed = room, deliver, read_missed
        self.last_sent = 0
        self.held: list[Outgoing] | None = []  # None: messages go straight through
        self.filler: asyncio.Task | None = None
        self.begun = False

    def begin(self, last_sent: int) -> None:
        """Everything up to ``last_sent`` is had already (from the history): go live."""
        self.last_sent, self.begun = last_sent, True
        self._release(fill_gaps=True)

    def push(self, items: list[Outgoing]) -> None:
        """Messages as the layer brought them (a batch, in id order)."""
        if self.held is None and items[0].id == self.last_sent + 1 and items[-1].id == self.last_sent + len(items):
            self.last_sent = items[-1].id  # the usual case: the next batch, whole
            self.deliver(items)
        elif self.held is not None:
            self.held.extend(items)
        else:
            self.held = list(items)
            self._release(fill_gaps=True)

    def close(self) -> None:
        if self.filler is not None:
            self.filler.cancel()

    async def _read_missed(self) -> None:
        try:
            missed = await self.read_missed(self.room, self.last_sent)
        except Exception:  # the database is away: deliver what is here rather than nothing
            logger.exception("Could not read %s's history after #%s", self.room, self.last_sent)
            missed = []
        self.filler = None
        self._send([item for item in missed if item.id > self.last_sent])
        self._release(fill_gaps=bool(missed))  # no progress: no second reading

    def _release(self, fill_gaps: bool) -> None:
        """Deliver the held messages in order; a gap is read from the history, unless a reading has just
        failed: then what is here is delivered anyway."""
        held = sorted(self.held or (), key=_id)
        run: list[Outgoing] = []
        for position, item in enumerate(held):
            following = run[-1].id if run else self.last_sent
            if item.id <= following:
                continue  # had already (history, a filled gap, or a late duplicate)
            if item.id > following + 1 and fill_gaps:
                self._send(run)
                self.held = held[position:]
                self.filler = asyncio.get_running_loop().create_task(self._read_missed())
                return
            run.append(item)
        self._send(run)
        self.held = None

    def _send(self, run: list[Outgoing]) -> None:
        if run:
            self.last_sent = run[-1].id
            self.deliver(run)


def _id(item: Outgoing) -> int:
    return item.id
