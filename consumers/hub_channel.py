"""The hub's own channel on the layer, and the cheapest way to read it.

Every process's hub receives every message of every room its readers are in, so what a receive costs is
paid once per message in each process, however many processes share the work: the part of a
delivery that does not shrink when processes are added. channels-redis's ``receive`` makes four round
trips to Redis for each message (a clean-up script, ``BZPOPMIN``, a backup copy and its removal, so
that a receive cancelled halfway loses nothing): about 340 µs of CPU here. The hub's channel is a plain
channel of its own (not a process-local ``…!…`` one, whose Redis key the layer shares between all of
a process's channels), which nobody else reads, read with one ``BZPOPMIN``: about 75 µs.

What the backup copy protected: a message popped while the receive is cancelled (at shutdown) or
cut off (Redis restarting) is lost. The hub's readers recover it: a room's stream reads a gap from
the history, and the next presence snapshot replaces a lost one. Other layers use their own receive.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from channels_redis.core import RedisChannelLayer

Receive = Callable[[], Awaitable[dict]]


async def open_channel(layer: Any, prefix: str) -> tuple[str, Receive]:
    """A new channel for this process's hub, and ``receive()`` for it."""
    if not isinstance(layer, RedisChannelLayer):
        channel = await layer.new_channel(prefix)
        return channel, partial(layer.receive, channel)
    channel = f"{prefix}.{uuid.uuid4().hex}"
    key = layer.prefix + channel  # where group_send puts the channel's messages,
    index = layer.consistent_hash(channel)  # on this host

    async def receive() -> dict:
        while True:
            popped = await layer.connection(index).bzpopmin(key, timeout=layer.brpop_timeout)
            if popped is not None:
                message = layer.deserialize(popped[1])
                message.pop("__asgi_channel__", None)  # (group_send names the channels a message went to)
                return message

    return channel, receive
