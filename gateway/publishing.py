"""Room messages out to MQTT: subscribers of the room service's stored batches (gateway.room_events),
and the claim by which exactly one adapter publishes each batch.

By default a batch goes to the layer group ``PUBLISH_GROUP`` (gateway.topics) as one ``mqtt.publish.many``
message: every adapter on the layer hears it, and the first to claim its key publishes it. A process
that runs a connected adapter of its own publishes what it stores through it, with no layer round trip
and no claim: ``gateway.adapters`` subscribes ``publish_through(adapter)`` ahead of the group's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from protocols.mqtt import MqttServer

from .room_events import StoredBatch, Subscriber
from .topics import PUBLISH_GROUP, publish_claim

CLAIM_SECONDS = 600  # how long a batch's claim is remembered: longer than any adapter lags behind


def claim_once(layer: Any) -> Callable[[dict], Awaitable[bool]]:
    """The adapter's ``claim``: whether it publishes an event, the first to claim its ``key`` on
    ``layer`` (``claim``, fanout.redis_layer); a layer without one serves one process: no one to share with."""
    claim = getattr(layer, "claim", None)

    async def claimed(event: dict) -> bool:
        key = event.get("key")
        if key is None or claim is None:
            return True
        return bool(await claim(publish_claim(key), CLAIM_SECONDS))

    return claimed


def send_to_adapters(layer: Any) -> Subscriber:
    """A subscriber that sends each batch to the adapters' group on ``layer`` (unless this process's own
    adapter took it)."""

    async def send(batch: StoredBatch) -> None:
        if batch.mqtt_taken:
            return
        batch.mqtt_taken = True
        message = {"type": "mqtt.publish.many", "messages": batch.publications, "key": batch.key}
        await layer.group_send(PUBLISH_GROUP, message)

    return send


def publish_through(adapter: MqttServer) -> Subscriber:
    """A subscriber that publishes each batch through ``adapter`` while it is connected (and not
    stopping); a batch it cannot take goes on to the group's adapters."""

    async def publish_here(batch: StoredBatch) -> None:
        if not batch.mqtt_taken and adapter.publish_here(batch.publications):
            batch.mqtt_taken = True

    return publish_here
