"""Devices posting into rooms over MQTT: ``rooms/<room>/in/<device>``, and anyone on ``rooms/<room>/in``
in an *MQTT open* room (see docs/security.md, "MQTT devices")."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Awaitable

from gateway import limits, metrics, rooms
from gateway.payloads import parse_payload
from gateway.runtime import runtime_of
from protocols.mqtt import AsyncMqttConsumer

logger = logging.getLogger(__name__)


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
            # A topic's messages are handed to the room in the order they came, whatever each awaits first
            # (a lookup of the room's rules): the adapter serves a window of them at once.
            async with _turn(runtime_of(self.scope).mqtt_turns, self.scope["topic"]):
                stored = await self.submit(payload)
            await stored
        except rooms.InvalidMessage as exc:
            return await self.reject(str(exc))
        except rooms.UNAVAILABLE as exc:  # the services are down, not the message: served again later
            # (anything else unexpected is raised: a failure the adapter counts, and parks after a few)
            return await self.retry(f"{type(exc).__name__}: {exc}")
        await self.ack()

    async def submit(self, payload: bytes) -> Awaitable[dict]:
        """Hand the message to its room (``InvalidMessage`` if it may not go there); what to await for it
        stored."""
        runtime = runtime_of(self.scope)
        post = parse_payload(payload)
        room, device = self.scope["route"]["kwargs"]["room"], self.scope["route"]["kwargs"].get("device")
        refusal = (await runtime.mqtt_rules(room)).refusal(device)
        if refusal:
            raise rooms.InvalidMessage(refusal)
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
        over_rate = not runtime.limits.allow("DEVICE", rate_key)
        if over_rate and not self.scope["qos"]:
            raise rooms.InvalidMessage(f"rate limit: {limits.describe('DEVICE')} for {rate_key}")
        key = post.key or user_property(self.scope, "id")
        # Without a key, what the device sent identifies it: a broker's redelivery (DUP) of a message
        # stored moments ago is acknowledged, not stored again (the room's writer decides, in the
        # transaction that would store it). Only redeliveries: a sensor that sends the same reading twice
        # on purpose is heard twice.
        digest = None if key else hashlib.sha256(origin.encode() + b"\n" + payload).hexdigest()
        return runtime.rooms.submit(
            room,
            post.text,
            sender=sender,
            source="mqtt",
            data=post.data,
            key=key and f"mqtt:{origin}:{key}",  # a device's retry posts once
            digest=digest,
            redelivered=bool(self.scope["dup"]),
            over_rate=over_rate if self.scope["qos"] else None,
        )


def _turn(turns: weakref.WeakValueDictionary[str, asyncio.Lock], topic: str) -> asyncio.Lock:
    """The topic's turn to hand a message to its room: taken in the order asked for (a lock's waiters
    are served first come, first served), held until the message is handed in, not until it is stored.
    ``turns``: the runtime's, each lock kept while someone holds or waits for it."""
    turn = turns.get(topic)
    if turn is None:
        turn = turns[topic] = asyncio.Lock()
    return turn
