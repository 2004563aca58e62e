"""Mail posting into rooms: ``<room>@EMAIL_DOMAIN``."""

from __future__ import annotations

from gateway import rooms
from gateway.mail import mail_to_post
from protocols.smtp import AsyncEmailConsumer


class RoomEmailConsumer(AsyncEmailConsumer):
    async def receive(self, content: bytes) -> None:
        try:
            text, sender = mail_to_post(content, self.scope["mail_from"])
            await rooms.post(self.scope["route"]["kwargs"]["room"], text, sender=sender, source="email")
        except rooms.InvalidMessage as exc:
            return await self.reject(554, f"5.6.0 {exc}")
        await self.accept()
