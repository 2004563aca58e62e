"""The gateway's channel layer (fanout/redis_layer.py) and the hub's channel on it (fanout/channel.py):
on Redis, a plain channel read with one pop, fed by the layer's own group_send, and a claim that only
the first caller wins; on any other layer, the layer's own channel and receive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.test import override_settings

from fanout.channel import open_channel
from fanout.redis_layer import GatewayRedisChannelLayer
from gateway import publishing
from tests.support import unique


@pytest.fixture
async def layer(redis_host) -> AsyncIterator[GatewayRedisChannelLayer]:
    layer = GatewayRedisChannelLayer(hosts=[f"redis://{redis_host[0]}:{redis_host[1]}/0"], prefix=unique("test-hub-"))
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close_pools()


async def test_on_redis_group_messages_arrive_in_order_as_sent(layer):
    channel, receive = await open_channel(layer, "hub")
    assert channel.startswith("hub.")
    assert "!" not in channel  # a plain channel: nobody else reads its key
    await layer.group_add("room", channel)
    sent = [{"type": "room.messages", "messages": [[n, f"text {n}"]]} for n in range(1, 21)]
    for message in sent:
        await layer.group_send("room", message)
    async with asyncio.timeout(10):
        received = [await receive() for _ in sent]
    assert received == sent  # as sent: the layer's routing field taken off


async def test_a_single_reader_channel_takes_a_plain_send_too(layer):
    channel = await layer.new_single_reader_channel("hub")
    await layer.send(channel, {"type": "room.presence", "text": "{}"})
    async with asyncio.timeout(10):
        assert await layer.receive_at_most_once(channel) == {"type": "room.presence", "text": "{}"}


async def test_only_the_first_claim_of_a_key_wins(layer):
    key = unique("published:room#1-3-")
    results = await asyncio.gather(*(layer.claim(key, 60) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await layer.claim(f"{key}-next", 60) is True  # another key is claimed afresh


async def test_the_adapters_claim_each_batch_once_through_the_layer(redis_host):
    config = {"hosts": [f"redis://{redis_host[0]}:{redis_host[1]}/0"], "prefix": unique("test-claim-")}
    backend = {"BACKEND": "fanout.redis_layer.GatewayRedisChannelLayer", "CONFIG": config}
    with override_settings(CHANNEL_LAYERS={"default": backend}):
        layer = get_channel_layer()
        claim_once = publishing.claim_once(layer)
        try:
            event = {"type": "mqtt.publish.many", "messages": [], "key": "room#1-2"}
            assert [await claim_once(event) for _ in range(3)] == [True, False, False]
            assert await claim_once({**event, "key": "room#3-3"}) is True
        finally:
            await layer.flush()
            await layer.close_pools()


async def test_a_layer_of_one_process_has_no_one_to_claim_against():
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}):
        event = {"type": "mqtt.publish.many", "messages": [], "key": "room#1-2"}
        claim_once = publishing.claim_once(get_channel_layer())
        assert [await claim_once(event) for _ in range(2)] == [True, True]


async def test_other_layers_keep_their_own_receive():
    layer = InMemoryChannelLayer()
    channel, receive = await open_channel(layer, "hub")
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "room.presence", "text": "{}"})
    async with asyncio.timeout(5):
        assert await receive() == {"type": "room.presence", "text": "{}"}
