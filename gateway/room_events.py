"""Stored batches, emitted once by the room service to the ways out that subscribe in this process.

The room service knows none of its subscribers: live delivery (the layer message for each process's
hub) and MQTT egress (the adapters' group, or this process's own adapter) subscribe to it; whoever
starts a way out subscribes it, and unsubscribes it when it stops. Data flows one way: rooms → bus →
the ways out, never back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import metrics

logger = logging.getLogger(__name__)


@dataclass
class StoredBatch:
    """Messages just stored in one room, in order: ``events`` and each as JSON in ``texts`` (serialised
    once for every way out), and their publications to the room's ``out`` topic."""

    room: str
    events: list[dict]
    texts: list[str]
    publications: list[dict]
    mqtt_taken: bool = field(default=False)  # an MQTT egress subscriber has it: the others leave it

    @property
    def key(self) -> str:
        """Names the batch, the same in every process: what the adapters claim."""
        return f"{self.room}#{self.events[0]['id']}-{self.events[-1]['id']}"


Subscriber = Callable[[StoredBatch], Awaitable[None]]


class RoomEvents:
    """A process-local bus: ``emit`` hands each batch to every subscriber, in order; one that fails
    costs only its own delivery (counted, logged: readers catch up from the history)."""

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self._subscribers: list[Subscriber] = list(subscribers or [])

    def subscribe(self, subscriber: Subscriber, *, first: bool = False) -> Callable[[], None]:
        """Add ``subscriber`` (``first``: before the others); returns what removes it."""
        if first:
            self._subscribers.insert(0, subscriber)
        else:
            self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    async def emit(self, batch: StoredBatch) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                await subscriber(batch)
            except Exception:
                metrics.layer_errors.inc()
                logger.exception(
                    "Delivery of %s#%s.. by %s failed; readers will catch up from history",
                    batch.room,
                    batch.events[0]["id"],
                    getattr(subscriber, "__qualname__", subscriber),
                )
