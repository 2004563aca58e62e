"""The garbage collector, settled for a long-running server process once it has started."""

from __future__ import annotations

import gc

# Python's default collects the young generation every 700 new objects. An adapter (short-lived objects
# by the thousand) collects it every 10,000; the ASGI process every 2,000: it holds thousands of idle
# connections, and the cyclic garbage their handshakes leave waits for a collection that an idle process
# does not come to (10,000 here left ~1.2 KB more per idle connection, for no handshake CPU gained).
GC_THRESHOLD = (10_000, 10, 10)
GC_THRESHOLD_ASGI = (2_000, 10, 10)


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
