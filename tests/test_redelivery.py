"""A broker's redelivery (DUP) of a message without an id is recognised by its content, and only that."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator

from consumers.mqtt import RoomMqttConsumer
from gateway.models import Message
from gateway.runtime import Runtime, WithRuntime
from gateway.topics import in_topic


async def deliver(runtime: Runtime, room: str, payload: bytes, *, dup: bool) -> dict:
    scope = {
        "type": "mqtt",
        "topic": in_topic(room),
        "qos": 1,
        "retain": False,
        "dup": dup,
        "properties": {},
        "route": {"kwargs": {"room": room}},
    }
    communicator = ApplicationCommunicator(WithRuntime(RoomMqttConsumer.as_asgi(), runtime), scope)
    await communicator.send_input({"type": "mqtt.publish", "payload": payload})
    answer = await communicator.receive_output(10)
    await communicator.wait(10)
    return answer


@pytest.mark.django_db(transaction=True)
async def test_a_redelivery_is_stored_once_but_a_repeated_reading_twice(runtime):
    reading = b'{"temperature": 21, "sender": "s1"}'
    assert (await deliver(runtime, "lab", reading, dup=False))["type"] == "mqtt.ack"
    assert (await deliver(runtime, "lab", reading, dup=True))["type"] == "mqtt.ack"  # the broker again: not stored
    assert await Message.objects.filter(room__name="lab").acount() == 1
    assert (await deliver(runtime, "lab", reading, dup=False))["type"] == "mqtt.ack"  # the sensor again, on purpose
    assert (await deliver(runtime, "lab", b'{"temperature": 22, "sender": "s1"}', dup=True))[
        "type"
    ] == "mqtt.ack"  # new
    assert [m.text async for m in Message.objects.filter(room__name="lab").order_by("seq")] == [
        "temperature: 21",
        "temperature: 21",
        "temperature: 22",
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_topic_s_messages_are_stored_in_the_order_they_came_whatever_each_awaits(runtime):
    """The adapter serves a window of a topic's messages at once; each looks up the room's rules first
    (kept a moment, then asked again). Lookups that end at odd moments must not let a later message
    overtake an earlier one on its way into the room, nor a redelivery (looked up in the database)."""
    import asyncio
    import random

    from channels.db import database_sync_to_async

    from gateway.answers import RecentAnswers
    from gateway.devices import mqtt_rules

    delays = random.Random(7)

    async def slow_rules(room: str):
        await asyncio.sleep(delays.random() / 200)  # a lookup that takes its time, differently each time
        return await database_sync_to_async(mqtt_rules)(room)

    runtime.mqtt_rules = RecentAnswers(slow_rules, 0.002)  # asked again every few messages
    room = "ordered"

    async def deliver_quietly(n: int) -> None:
        await deliver(runtime, room, f"m{n}".encode(), dup=n % 7 == 0)  # now and then a (first) redelivery

    started = []
    for n in range(200):  # started in arrival order, a few at a time, as the adapter's window starts them
        started.append(asyncio.ensure_future(deliver_quietly(n)))
        if n % 5 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*started)
    stored = [m.text async for m in Message.objects.filter(room__name=room).order_by("seq")]
    assert stored == [f"m{n}" for n in range(200)]
