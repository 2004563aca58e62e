"""Room messages out to MQTT: exactly one adapter publishes each one. A message stored in a process that
runs an adapter is published by that adapter; any other goes to the group, where every adapter on the
channel layer hears it and the first to claim it publishes it."""

from __future__ import annotations

from channels.layers import get_channel_layer

from protocols.mqtt import DEFAULT_PUBLISH_GROUP

local_adapter = None  # this process's MQTT adapter (gateway.adapters sets it while it runs)

CLAIM_SECONDS = 600  # how long a message's claim is remembered: longer than any adapter lags behind


async def claim_once(event: dict) -> bool:
    """Whether this adapter publishes ``event``: the first to claim its ``key`` does. On Redis the claim
    is a ``SET NX`` beside the layer's own keys; a layer of one process has no one to share with."""
    layer = get_channel_layer()
    key = event.get("key")
    if key is None or not hasattr(layer, "consistent_hash"):
        return True
    connection = layer.connection(layer.consistent_hash(key))
    return bool(await connection.set(f"{layer.prefix}:published:{key}", b"1", nx=True, ex=CLAIM_SECONDS))


def publish_here(publications: list[dict]) -> bool:
    """Publish a batch's ``mqtt.publish`` events through this process's own adapter, if it runs and is
    connected: it publishes what is stored here, and the group (with its claims) carries the rest.
    False: send them to the group."""
    adapter = local_adapter
    return adapter is not None and adapter.publish_group == DEFAULT_PUBLISH_GROUP and adapter.publish_here(publications)
