"""The hub's own channel on the layer, and the cheapest way to read it.

Every process's hub receives every message of every room its readers are in, so a receive's cost is
paid once per message in each process. The gateway's layer (fanout/redis_layer.py) reads a channel that
only the hub reads with one pop; what that gives up (a message popped during a cancelled receive is
lost) the hub's readers recover from the history. Any other layer: its own channel and receive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

Receive = Callable[[], Awaitable[dict]]


async def open_channel(layer: Any, prefix: str) -> tuple[str, Receive]:
    """A new channel for this process's hub, and ``receive()`` for it."""
    if hasattr(layer, "receive_at_most_once"):  # fanout.redis_layer.GatewayRedisChannelLayer
        channel = await layer.new_single_reader_channel(prefix)
        return channel, partial(layer.receive_at_most_once, channel)
    channel = await layer.new_channel(prefix)
    return channel, partial(layer.receive, channel)
