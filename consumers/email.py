"""Mail posting into rooms: ``<room>@EMAIL_DOMAIN``."""

from __future__ import annotations

import logging

from django.conf import settings

from gateway import limits, rooms
from gateway.mail import mail_to_post
from protocols.smtp import AsyncEmailConsumer

logger = logging.getLogger(__name__)


class RoomEmailConsumer(AsyncEmailConsumer):
    async def receive(self, content: bytes) -> None:
        room = self.scope["route"]["kwargs"]["room"]
        try:
            mail = mail_to_post(content, self.scope["mail_from"], settings.EMAIL_DOMAIN)
            if mail.automatic:
                # Accepted and dropped: refusing would make the sending server bounce, which loops.
                logger.info("Auto-generated mail for room %s not posted: %s", room, mail.automatic)
                return await self.accept()
            if not limits.allow("MAIL_SENDER", f"{self.scope['mail_from'].lower()} {room}"):  # per sender and room
                return await self.reject(
                    451, f"4.7.1 too many mails from you ({limits.describe('MAIL_SENDER')}), try later"
                )
            key = f"email:{mail.message_id}" if mail.message_id else None  # a re-sent mail posts once
            await rooms.post(room, mail.text, sender=mail.sender, source="email", key=key)
        except rooms.RateLimited as exc:
            return await self.reject(451, f"4.7.1 {exc}")
        except rooms.InvalidMessage as exc:
            return await self.reject(554, f"5.6.0 {exc}")
        await self.accept()
