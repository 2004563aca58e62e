"""Refused recipients per client address: what makes guessing addresses over SMTP slow."""

from __future__ import annotations

import time
from collections import OrderedDict


class RefusedRecipients:
    """A token bucket per client IP, spent by each refused ``RCPT TO``: ``burst`` at once, then ``rate`` a
    second. While a client's bucket is empty every recipient it names is answered alike (``421``), the
    real ones too, so that probing learns nothing until it has waited. ``rate`` 0 turns it off."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000) -> None:
        self.rate, self.burst, self.max_clients = rate, max(1, burst), max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def _tokens(self, client: str) -> float:
        tokens, then = self.buckets.get(client, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - then) * self.rate)

    def exhausted(self, client: str) -> bool:
        return self.rate > 0 and self._tokens(client) < 1

    def refused(self, client: str) -> None:
        """One more refused recipient for ``client``."""
        if self.rate <= 0:
            return
        tokens = self._tokens(client)
        self.buckets.pop(client, None)
        self.buckets[client] = (max(0.0, tokens - 1), time.monotonic())
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)  # forget the least recently refused client
