"""Devices posting into rooms over MQTT: ``rooms/<room>/in``."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import timedelta

from channels.db import database_sync_to_async

from gateway import limits, metrics, rooms
from gateway.devices import room_takes_mqtt
from gateway.payloads import parse_payload
from protocols.mqtt import AsyncMqttConsumer

logger = logging.getLogger(__name__)

REDELIVERY_WINDOW = timedelta(minutes=10)
ROOM_RULES_SECONDS = 2.0  # how long a room's "takes MQTT" answer is kept: a change applies within this

_takes_mqtt: dict[str, tuple[bool, float]] = {}  # room -> (answer, until)
_asking: dict[str, asyncio.Task] = {}  # room -> the lookup in progress, which every message meanwhile awaits


async def takes_mqtt(room: str) -> bool:
    """``room_takes_mqtt``, asked once in a while rather than on every message of a busy device.

    When the answer is stale, one lookup runs and the messages that arrive meanwhile wait for it
    instead of each asking the database too."""
    answer, until = _takes_mqtt.get(room, (False, 0.0))
    if until >= time.monotonic():
        return answer
    asking = _asking.get(room)
    if asking is None or asking.get_loop() is not asyncio.get_running_loop():
        asking = _asking[room] = asyncio.get_running_loop().create_task(_ask(room))
    return await asyncio.shield(asking)  # a waiter that gives up does not cancel it for the others


async def _ask(room: str) -> bool:
    try:
        answer = await database_sync_to_async(room_takes_mqtt)(room)
        if len(_takes_mqtt) >= 10_000:
            _takes_mqtt.clear()
        _takes_mqtt[room] = (answer, time.monotonic() + ROOM_RULES_SECONDS)
        return answer
    finally:
        if _asking.get(room) is asyncio.current_task():
            del _asking[room]


class RoomMqttConsumer(AsyncMqttConsumer):
    async def reject(self, reason: str) -> None:
        metrics.rejects.labels("mqtt").inc()
        await super().reject(reason)

    async def receive(self, payload: bytes) -> None:
        if self.scope["retain"]:
            # A retained message is replayed by the broker on every subscribe: posting it would repeat it.
            return await self.reject("retained messages are not posted (publish without retain)")
        try:
            post = parse_payload(payload)
            room = self.scope["route"]["kwargs"]["room"]
            if not await takes_mqtt(room):
                return await self.reject(f"room {room} takes no MQTT posts (not MQTT-open, no devices)")
            if not limits.allow("DEVICE", post.sender):
                return await self.reject(f"rate limit: {limits.describe('DEVICE')} for {post.sender}")
            # Without a key, what the device sent identifies it: a broker's redelivery (DUP) of a message
            # already stored moments ago is acknowledged, not stored again. Only redeliveries: a sensor
            # that sends the same reading twice on purpose is heard twice.
            digest = None if post.key else hashlib.sha256(post.sender.encode() + b"\n" + payload).hexdigest()
            if digest and self.scope["dup"] and await rooms.stored_recently(room, digest, REDELIVERY_WINDOW):
                logger.info("Redelivered MQTT message on %s already stored", self.scope["topic"])
                return await self.ack()
            await rooms.post(
                room,
                post.text,
                sender=post.sender,
                source="mqtt",
                data=post.data,
                key=post.key and f"mqtt:{post.sender}:{post.key}",  # a device's retry posts once
                digest=digest,
            )
        except rooms.InvalidMessage as exc:
            return await self.reject(str(exc))
        await self.ack()
