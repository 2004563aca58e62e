"""Base consumer for ``mqtt`` scopes: one instance per inbound PUBLISH."""

from __future__ import annotations

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import aclose_old_connections
from channels.exceptions import StopConsumer


class AsyncMqttConsumer(AsyncConsumer):
    """Override ``receive(payload)`` and answer with ``ack()`` once the message is safe, or ``reject()``.

    The instance lives for one message, so it does not open a channel-layer
    channel of its own; use ``channels.layers.get_channel_layer()`` to reach others.

    It takes its one event and dispatches it directly: no task per ``receive()`` (Channels'
    ``await_many_dispatch``) and no hop to the database thread before the handler (Channels'
    ``aclose_old_connections`` in ``AsyncConsumer.dispatch``). Do database work through
    ``channels.db.database_sync_to_async``, which closes stale connections around every call;
    after a handler raised, stale connections are closed before the exception propagates, so
    the adapter's retry starts on a fresh one.
    """

    channel_layer_alias = None

    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            await aclose_old_connections()  # a broken connection is not kept for the retry
            raise

    async def mqtt_publish(self, event: dict) -> None:
        await self.receive(event["payload"])
        raise StopConsumer()  # one message per instance; an exception propagates to the server's log

    async def receive(self, payload: bytes) -> None:
        raise NotImplementedError

    async def ack(self) -> None:
        """The message is safe: the adapter may now send PUBACK."""
        await self.send({"type": "mqtt.ack"})

    async def reject(self, reason: str) -> None:
        """Refuse the message; the adapter logs ``reason`` and will not ask again."""
        await self.send({"type": "mqtt.reject", "reason": reason})

    async def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        await self.send({"type": "mqtt.publish", "topic": topic, "payload": payload, "qos": qos, "retain": retain})
