"""Room messages out to MQTT: every adapter on the channel layer hears each one; exactly one publishes it."""

from __future__ import annotations

from channels.layers import get_channel_layer

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
