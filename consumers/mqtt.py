"""Devices posting into rooms over MQTT: ``rooms/<room>/in/<device>``, and anyone on ``rooms/<room>/in``
in an *MQTT open* room (see docs/security.md, "MQTT devices")."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from channels.db import database_sync_to_async

from gateway import limits, metrics, rooms
from gateway.answers import RecentAnswers
from gateway.devices import mqtt_rules
from gateway.payloads import parse_payload
from protocols.mqtt import AsyncMqttConsumer

logger = logging.getLogger(__name__)

REDELIVERY_WINDOW = timedelta(minutes=10)
ROOM_RULES_SECONDS = 2.0  # how long a room's MQTT rules are kept: a change applies within this

# "Whom does the room take MQTT posts from?", asked once in a while rather than on every message of a
# busy device (the messages that arrive during a lookup share it).
room_rules = RecentAnswers(database_sync_to_async(mqtt_rules), ROOM_RULES_SECONDS)


def user_property(scope: dict, name: str) -> str | None:
    """An MQTT 5 user property of the message (the first of that name), or None."""
    for pair in scope.get("properties", {}).get("UserProperty", ()):
        if len(pair) == 2 and pair[0] == name and pair[1]:
            return str(pair[1])
    return None


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
            room, device = self.scope["route"]["kwargs"]["room"], self.scope["route"]["kwargs"].get("device")
            refusal = (await room_rules(room)).refusal(device)
            if refusal:
                return await self.reject(refusal)
            # On its own topic, the device's name is its identity (the broker let only that device publish
            # there): a ``sender`` in the payload is a claim, and ignored. On the bare topic of an open room
            # the claim is shown, as an anonymous HTTP post's is, and the rate is the room's anonymous one:
            # a claim can be changed at every message, a topic the broker guards cannot.
            sender, rate_key = (device, device) if device else (post.sender, f"{room}/in")
            # Whose retries and redeliveries these are: a claim never borrows a device's keys.
            origin = f"device/{device}" if device else f"sender/{post.sender}"
            # Over its rate, a QoS 0 message is dropped; a QoS 1 one is stored all the same (nothing can tell
            # the device to slow down, and holding its PUBACK would stall the broker's window for every
            # room), and the room's live delivery is coalesced meanwhile (docs/mqtt.md, "Rate limits").
            over_rate = not limits.allow("DEVICE", rate_key)
            if over_rate and not self.scope["qos"]:
                return await self.reject(f"rate limit: {limits.describe('DEVICE')} for {rate_key}")
            key = post.key or user_property(self.scope, "id")
            # Without a key, what the device sent identifies it: a broker's redelivery (DUP) of a message
            # already stored moments ago is acknowledged, not stored again. Only redeliveries: a sensor
            # that sends the same reading twice on purpose is heard twice.
            digest = None if key else hashlib.sha256(origin.encode() + b"\n" + payload).hexdigest()
            if digest and self.scope["dup"] and await rooms.stored_recently(room, digest, REDELIVERY_WINDOW):
                logger.info("Redelivered MQTT message on %s already stored", self.scope["topic"])
                return await self.ack()
            await rooms.post(
                room,
                post.text,
                sender=sender,
                source="mqtt",
                data=post.data,
                key=key and f"mqtt:{origin}:{key}",  # a device's retry posts once
                digest=digest,
                over_rate=over_rate if self.scope["qos"] else None,
            )
        except rooms.InvalidMessage as exc:
            return await self.reject(str(exc))
        except rooms.UNAVAILABLE as exc:  # the services are down, not the message: served again later
            # (anything else unexpected is raised: a failure the adapter counts, and parks after a few)
            return await self.retry(f"{type(exc).__name__}: {exc}")
        await self.ack()
