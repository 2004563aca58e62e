"""Base consumer for ``mqtt`` scopes: one instance per inbound PUBLISH."""

from __future__ import annotations

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer

from ..consumer import DirectDispatch


class AsyncMqttConsumer(DirectDispatch, AsyncConsumer):
    """Override ``receive(payload)`` and answer with ``ack()`` once the message is safe, ``reject()``
    when it never will be, or ``retry()`` when it cannot be made safe now.

    The instance lives for one message, so it does not open a channel-layer
    channel of its own; use ``channels.layers.get_channel_layer()`` to reach others.
    Its one event is dispatched directly (``protocols.consumer.DirectDispatch``): do database work
    through ``channels.db.database_sync_to_async``; after a handler raised, stale connections are
    closed before the exception goes on, so the adapter's retry starts on a fresh one.
    """

    channel_layer_alias = None

    async def mqtt_publish(self, event: dict) -> None:
        await self.receive(event["payload"])
        raise StopConsumer()  # one message per instance; an exception is a failure the server counts

    async def receive(self, payload: bytes) -> None:
        raise NotImplementedError

    async def ack(self) -> None:
        """The message is safe: the adapter may now send PUBACK."""
        await self.send({"type": "mqtt.ack"})

    async def reject(self, reason: str) -> None:
        """Refuse the message; the adapter logs ``reason`` and will not ask again."""
        await self.send({"type": "mqtt.reject", "reason": reason})

    async def retry(self, reason: str) -> None:
        """The message is fine but cannot be made safe now (a database or channel layer is down): the
        adapter serves it again later, with backoff, without counting a failure. For infrastructure
        only: a message that can never succeed is a ``reject``, and an unexpected error is raised."""
        await self.send({"type": "mqtt.retry", "reason": reason})

    async def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        await self.send({"type": "mqtt.publish", "topic": topic, "payload": payload, "qos": qos, "retain": retain})
