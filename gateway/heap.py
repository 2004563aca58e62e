"""The garbage collector, settled for a long-running server process once it has started."""

from __future__ import annotations

import asyncio
import gc

# Python's default collects the young generation every 700 new objects. An adapter (short-lived objects
# by the thousand) collects it every 10,000; the ASGI process every 2,000: it holds thousands of idle
# connections, and the cyclic garbage their handshakes leave waits for a collection that an idle process
# does not come to (10,000 here left ~1.2 KB more per idle connection, for no handshake CPU gained).
# The ASGI process's oldest generation waits for 100 collections of the middle one, not 10: its full
# collections come when a burst of connections is over (``QuietCollector``), not all through it.
GC_THRESHOLD = (10_000, 10, 10)
GC_THRESHOLD_ASGI = (2_000, 10, 100)
QUIET_CHECK_SECONDS = 2.0
QUIET_AFTER = 10  # middle-generation collections since the last full one: where CPython's default collects


def settle_heap(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """Once started: what start-up made (Django, the apps, the modules) lives as long as the process, so
    the garbage collector stops scanning it (``gc.freeze``), and collects the young objects less often.

    Without this, a full collection walks every object of the process, and bursts of new objects bring
    one on often. In an MQTT adapter under load (a thousand messages in flight, each with its task, its
    paho message and its relay publication) one came about every half second, and collections took a
    tenth of its time. In the ASGI process, 2,000 handshakes (each connection keeps a few hundred
    objects) brought two full collections of ~90 ms each: ~15 % of its CPU, ~0.1 ms a handshake."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)


class QuietCollector:
    """The ASGI process's full collections: once a burst of new connections is over, not all through it.

    A reconnect storm opens thousands of connections in seconds, and each keeps a few dozen objects
    for as long as it is open. With CPython's default a full collection comes whenever the objects
    that survived grew by a quarter, walking every object of the process each time: five in a
    10,000-reader storm, ~1 s of its ~6.5 s of CPU. With the oldest generation's threshold at 100
    (``GC_THRESHOLD_ASGI``) they wait. Every ``every`` seconds this looks whether the default would have
    collected by now (``after`` middle-generation collections since the last full one) and whether
    none came since the last look (the burst is over); then it collects, once. In steady traffic that
    never pauses, CPython's own threshold still collects, ten times less often.

    What waits meanwhile is the garbage of cycles, which the handshakes no longer leave (the upgraded
    HTTP request, ``GatewayServer.protocol_disconnected``): the 10,000 idle connections cost the same
    memory as with the default (8.6 KB each)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, every: float = QUIET_CHECK_SECONDS, after: int = QUIET_AFTER
    ) -> None:
        self.loop, self.every, self.after = loop, every, after
        self.seen = gc.get_count()[2]
        self.handle: asyncio.TimerHandle | None = None
        self.collections = 0  # made here

    def start(self) -> None:
        self.handle = self.loop.call_later(self.every, self.check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def check(self) -> None:
        since_full = gc.get_count()[2]  # middle-generation collections since the last full one
        if since_full >= self.after and since_full == self.seen:
            gc.collect()
            self.collections += 1
        self.seen = gc.get_count()[2]
        self.start()
