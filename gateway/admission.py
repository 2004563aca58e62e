"""Admission instead of refusal: new connections are accepted only while fewer than ``limit`` WebSocket
handshakes are in progress; the rest wait in the kernel's listen backlog.

After a restart every reader reconnects at once. Accepting them all makes every handshake wait behind
all the others: those not answered within daphne's handshake timeout (5 s) are refused after the work
on them was done, and their readers back off for longer (congestion collapse). Paused, the listening
socket is simply not read (Twisted's public ``stopReading()``/``startReading()`` of the port), so the
storm becomes a queue served at the rate the process completes handshakes, and none is wasted.

A place is held by an accepted connection until its first request is read (or for ``ADMISSION_GRACE``,
1 s, if it sends nothing: silent connections cannot keep the server closed), then, for a WebSocket, by
its handshake until the application accepts or refuses it, or the connection ends. Connections
accepted together in one of Twisted's accept bursts may go a little beyond the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Admission:
    """Counts handshakes in progress and pauses the listening ports at ``limit`` (0: never)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: set[Any] = set()  # the protocols whose handshake is in progress
        self.ports: list[Any] = []
        self.paused = False

    def add_port(self, port: Any) -> None:
        self.ports.append(port)
        if self.paused:
            port.stopReading()

    def begin(self, protocol: Any) -> None:
        """A handshake has begun (its upgrade request was read)."""
        if self.limit > 0:
            self.pending.add(protocol)
            if len(self.pending) >= self.limit and not self.paused:
                self._set_paused(True)

    def end(self, protocol: Any) -> None:
        """Accepted, refused or gone: the next connection may come in. (Any protocol; idempotent.)"""
        self.pending.discard(protocol)
        if self.paused and len(self.pending) < self.limit:
            self._set_paused(False)

    def sweep(self, in_progress: Callable[[Any], bool]) -> None:
        """Forget handshakes that ended unseen (a safety net, called now and then)."""
        for protocol in [p for p in self.pending if not in_progress(p)]:
            self.end(protocol)

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        for port in self.ports:
            if port.connected and not port.disconnecting:  # not once it stopped listening (draining)
                if paused:
                    port.stopReading()
                else:
                    port.startReading()
