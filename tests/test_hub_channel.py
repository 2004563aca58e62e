"""The hub's channel (consumers/hub_channel.py): on channels-redis, a plain channel read with one pop,
fed by the layer's own group_send; on any other layer, the layer's own channel and receive."""

from __future__ import annotations

import asyncio

from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from consumers.hub_channel import open_channel
from tests.support import unique


async def test_on_redis_group_messages_arrive_in_order_as_sent(redis_host):
    layer = RedisChannelLayer(hosts=[f"redis://{redis_host[0]}:{redis_host[1]}/0"], prefix=unique("test-hub-"))
    try:
        channel, receive = await open_channel(layer, "hub")
        assert channel.startswith("hub.") and "!" not in channel  # nobody else reads its key
        await layer.group_add("room", channel)
        sent = [{"type": "room.messages", "messages": [[n, f"text {n}"]]} for n in range(1, 21)]
        for message in sent:
            await layer.group_send("room", message)
        async with asyncio.timeout(10):
            received = [await receive() for _ in sent]
        assert received == sent  # as sent: the layer's routing field taken off
    finally:
        await layer.flush()
        await layer.close_pools()


async def test_other_layers_keep_their_own_receive():
    layer = InMemoryChannelLayer()
    channel, receive = await open_channel(layer, "hub")
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "room.presence", "text": "{}"})
    async with asyncio.timeout(5):
        assert await receive() == {"type": "room.presence", "text": "{}"}
