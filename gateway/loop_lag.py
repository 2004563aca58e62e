"""How late this process's event loop runs: the one number that shows when one input holds everyone up.

Every protocol of a process shares one event loop, so a handler that keeps it busy (a parser with no
budget, a blocking call) delays every WebSocket, HTTP request and MQTT acknowledgement alike. A timer
that should fire every ``INTERVAL`` seconds measures how late it fires; the worst lateness of the last
``WINDOW`` seconds is what ``/healthz`` and ``/metrics`` report.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque

from . import metrics

INTERVAL = 0.25  # seconds between looks
WINDOW = 10.0  # seconds of looks the reported lag covers


class LoopLag:
    """The lateness of one event loop's timer, sampled every ``INTERVAL`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.samples: deque[tuple[float, float]] = deque()  # (when, how late), oldest first
        # A context of its own: the caller's may be a request's, which ends before this does.
        self.task = loop.create_task(self._run(), context=contextvars.Context())

    @property
    def recent(self) -> float:
        """The worst lateness, in seconds, of the last ``WINDOW`` seconds (0 before the first look)."""
        self._forget(time.monotonic())
        return max((lag for _, lag in self.samples), default=0.0)

    def _forget(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - WINDOW:
            self.samples.popleft()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(INTERVAL)  # the timer whose lateness is measured
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - started - INTERVAL)))
            metrics.loop_lag.set(self.recent)

    def stop(self) -> None:
        self.task.cancel()
