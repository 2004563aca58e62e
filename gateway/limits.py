"""Rate limits: token buckets per key (a connection, a device, a mail sender, a room), in this process.

Each process counts its own traffic: with N processes behind a balancer a key gets up to N times
the rate. That bounds abuse per process without a shared store on the hot path.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from django.conf import settings


class RateLimiter:
    """Allow ``rate`` events a second per key on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True  # 0 turns the limit off
        now = time.monotonic()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - allowed, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # forget the least recently seen key
        return allowed


class Limits:
    """A process's rate limiters (``gateway.runtime.Runtime.limits``), one per setting, made on first use."""

    def __init__(self) -> None:
        self._limiters: dict[str, RateLimiter] = {}

    def allow(self, name: str, key: str) -> bool:
        """``allow("ROOM", "lobby")``: is this event within ``ROOM_RATE`` for that key?"""
        limiter = self._limiters.get(name)
        if limiter is None:
            rate = getattr(settings, f"{name}_RATE")
            limiter = self._limiters[name] = RateLimiter(rate, max(1, int(rate * settings.RATE_BURST_SECONDS)))
        return limiter.allow(key)


def describe(name: str) -> str:
    return f"at most {getattr(settings, f'{name}_RATE'):g} a second"
