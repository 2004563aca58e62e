"""Devices posting into rooms over MQTT: ``rooms/<room>/in``."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from channels.db import database_sync_to_async

from gateway import limits, metrics, rooms
from gateway.answers import RecentAnswers
from gateway.devices import room_takes_mqtt
from gateway.payloads import parse_payload
from protocols.mqtt import AsyncMqttConsumer

logger = logging.getLogger(__name__)

REDELIVERY_WINDOW = timedelta(minutes=10)
ROOM_RULES_SECONDS = 2.0  # how long a room's "takes MQTT" answer is kept: a change applies within this

# "Does the room take MQTT posts?", asked once in a while rather than on every message of a busy device
# (the messages that arrive during a lookup share it).
takes_mqtt = RecentAnswers(database_sync_to_async(room_takes_mqtt), ROOM_RULES_SECONDS)


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
        except rooms.UNAVAILABLE as exc:  # the services are down, not the message: served again later
            # (anything else unexpected is raised: a failure the adapter counts, and parks after a few)
            return await self.retry(f"{type(exc).__name__}: {exc}")
        await self.ack()
