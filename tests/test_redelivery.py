"""A broker's redelivery (DUP) of a message without an id is recognised by its content, and only that."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator

from consumers.mqtt import RoomMqttConsumer
from gateway.models import Message


async def deliver(room: str, payload: bytes, *, dup: bool) -> dict:
    scope = {
        "type": "mqtt",
        "topic": f"rooms/{room}/in",
        "qos": 1,
        "retain": False,
        "dup": dup,
        "properties": {},
        "route": {"kwargs": {"room": room}},
    }
    communicator = ApplicationCommunicator(RoomMqttConsumer.as_asgi(), scope)
    await communicator.send_input({"type": "mqtt.publish", "payload": payload})
    answer = await communicator.receive_output(10)
    await communicator.wait(10)
    return answer


@pytest.mark.django_db(transaction=True)
async def test_a_redelivery_is_stored_once_but_a_repeated_reading_twice():
    reading = b'{"temperature": 21, "sender": "s1"}'
    assert (await deliver("lab", reading, dup=False))["type"] == "mqtt.ack"
    assert (await deliver("lab", reading, dup=True))["type"] == "mqtt.ack"  # the broker again: not stored
    assert await Message.objects.filter(room__name="lab").acount() == 1
    assert (await deliver("lab", reading, dup=False))["type"] == "mqtt.ack"  # the sensor again, on purpose
    assert (await deliver("lab", b'{"temperature": 22, "sender": "s1"}', dup=True))["type"] == "mqtt.ack"  # new
    assert [m.text async for m in Message.objects.filter(room__name="lab").order_by("seq")] == [
        "temperature: 21",
        "temperature: 21",
        "temperature: 22",
    ]
