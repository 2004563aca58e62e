"""Base consumer for ``email`` scopes: one instance per accepted mail and recipient."""

from __future__ import annotations

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer

from ..consumer import DirectDispatch


class AsyncEmailConsumer(DirectDispatch, AsyncConsumer):
    """Override ``receive(content)`` (the raw RFC 5322 bytes) and answer ``accept()`` or ``reject()``.

    Its one event is dispatched directly (``protocols.consumer.DirectDispatch``): do database work
    through ``channels.db.database_sync_to_async``."""

    channel_layer_alias = None  # one instance per mail: no channel-layer channel of its own

    async def email_receive(self, event: dict) -> None:
        await self.receive(event["content"])
        raise StopConsumer()  # one message per instance; an exception propagates to the server's log

    @classmethod
    async def recipient_refusal(cls, scope: dict) -> str | None:
        """At RCPT time (``scope`` has no content yet): an SMTP reply refusing the recipient, or None."""
        return None

    async def receive(self, content: bytes) -> None:
        raise NotImplementedError

    async def accept(self) -> None:
        """The mail is safe: the adapter may answer 250."""
        await self.send({"type": "email.accept"})

    async def reject(self, code: int, reason: str) -> None:
        """Refuse the mail with an SMTP reply: 4xx asks the sender to retry, 5xx is final."""
        await self.send({"type": "email.reject", "code": code, "reason": reason})
