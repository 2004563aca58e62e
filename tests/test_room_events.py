"""The room service's bus (gateway/room_events.py): each stored batch to every subscriber, in order; one
that fails costs only its own delivery; an unsubscribed one hears nothing more."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from gateway.room_events import RoomEvents, StoredBatch


def layer_errors() -> float:
    return REGISTRY.get_sample_value("gateway_layer_errors_total") or 0.0


def batch(first: int, last: int) -> StoredBatch:
    events = [{"type": "message", "id": n, "room": "lobby"} for n in range(first, last + 1)]
    return StoredBatch("lobby", events, [str(n) for n in range(first, last + 1)], [])


async def test_every_subscriber_hears_each_batch_in_order_and_a_failing_one_costs_only_itself(caplog):
    heard: list[tuple[str, str]] = []

    async def first(stored: StoredBatch) -> None:
        heard.append(("first", stored.key))

    async def broken(stored: StoredBatch) -> None:
        raise ConnectionError("the layer is down")

    async def last(stored: StoredBatch) -> None:
        heard.append(("last", stored.key))

    bus = RoomEvents([broken, last])
    bus.subscribe(first, first=True)
    errors = layer_errors()
    await bus.emit(batch(1, 3))
    assert heard == [("first", "lobby#1-3"), ("last", "lobby#1-3")]
    assert layer_errors() == errors + 1
    assert "the layer is down" in caplog.text


async def test_an_unsubscribed_subscriber_hears_nothing_more():
    heard: list[str] = []

    async def subscriber(stored: StoredBatch) -> None:
        heard.append(stored.key)

    bus = RoomEvents()
    unsubscribe = bus.subscribe(subscriber)
    await bus.emit(batch(1, 1))
    unsubscribe()
    unsubscribe()  # twice is harmless (a stop after a failed start)
    await bus.emit(batch(2, 2))
    assert heard == ["lobby#1-1"]


@pytest.mark.parametrize("taken", [False, True])
async def test_the_mqtt_egress_to_the_group_leaves_a_batch_another_took(taken):
    from channels.layers import get_channel_layer

    from gateway import publishing
    from gateway.topics import PUBLISH_GROUP

    layer = get_channel_layer()
    channel = await layer.new_channel("test-egress")
    await layer.group_add(PUBLISH_GROUP, channel)
    stored = batch(4, 5)
    stored.mqtt_taken = taken
    try:
        send_to_adapters = publishing.send_to_adapters(layer)
        await send_to_adapters(stored)
        await send_to_adapters(stored)  # a second egress subscriber: the batch is taken
        await layer.send(channel, {"type": "end"})
        received = [await layer.receive(channel)]
        while received[-1]["type"] != "end":
            received.append(await layer.receive(channel))
    finally:
        await layer.group_discard(PUBLISH_GROUP, channel)
    expected = [] if taken else [{"type": "mqtt.publish.many", "messages": [], "key": "lobby#4-5"}]
    assert received[:-1] == expected
