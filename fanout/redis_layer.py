"""The gateway's channel layer: channels-redis's ``RedisChannelLayer`` with the two things the gateway
needs that the layer API does not offer, as methods of a subclass (settings' ``CHANNEL_LAYERS``
``BACKEND``), so nothing outside this module reads the layer's keys, hashing or connections.

Why the Redis core layer and not its pub/sub layer: the hub's delivery is at most once with the
history behind it, which pub/sub would give, but the MQTT egress must reach exactly one adapter of
several even while one is briefly away, and the core layer's queues (with a claim) do that; one layer
serves both.

- ``new_single_reader_channel`` / ``receive_at_most_once``: a process's hub receives every message of
  every room its readers are in, so what a receive costs is paid once per message in each process,
  however many processes share the work. The core layer's ``receive`` makes four round trips (a
  clean-up script, ``BZPOPMIN``, a backup copy and its removal, so that a receive cancelled halfway
  loses nothing): about 340 µs of CPU. A plain channel of its own (not a process-local ``…!…`` one,
  whose key all of a process's channels share) that nobody else reads takes one ``BZPOPMIN``: about
  75 µs. A message popped while the receive is cancelled (shutdown) or cut off (Redis restarting) is
  lost; the hub's readers recover it from the history, and the next presence snapshot replaces one.
- ``claim``: several MQTT adapters hear each egress batch; the first to claim its key publishes it.
"""

from __future__ import annotations

import uuid

from channels_redis.core import RedisChannelLayer


class GatewayRedisChannelLayer(RedisChannelLayer):
    """channels-redis's core layer, plus a single-pop receive for single-reader channels and a claim."""

    async def new_single_reader_channel(self, prefix: str = "specific") -> str:
        """A new channel that only its creator reads, with ``receive_at_most_once``; ``group_send`` and
        ``send`` reach it as any channel."""
        return f"{prefix}.{uuid.uuid4().hex}"

    async def receive_at_most_once(self, channel: str) -> dict:
        """The next message on ``channel`` (from ``new_single_reader_channel``), in one ``BZPOPMIN``: a
        message popped while this is cancelled is lost."""
        key = self.prefix + channel  # where send and group_send put the channel's messages
        connection = self.connection(self.consistent_hash(channel))
        while True:
            popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
            if popped is not None:
                message = self.deserialize(popped[1])
                message.pop("__asgi_channel__", None)  # (group_send names the channels a message went to)
                return message

    async def claim(self, key: str, seconds: float) -> bool:
        """Whether this caller is the first to claim ``key`` in the last ``seconds``: a ``SET NX`` of
        ``<prefix>:<key>``, beside the layer's own keys, on the host ``key`` hashes to."""
        connection = self.connection(self.consistent_hash(key))
        return bool(await connection.set(f"{self.prefix}:{key}", b"1", nx=True, ex=max(1, int(seconds))))
