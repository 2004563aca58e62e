"""Mail posting into rooms: ``<room>@EMAIL_DOMAIN``."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets

from channels.db import database_sync_to_async
from django.conf import settings

from gateway import attachments, deadletters, limits, mail_caps, mail_workers, metrics, rooms
from gateway.access import mail_rules
from gateway.mail import NOTHING_TO_POST, MailPost, UnreadableMail, truncated
from gateway.models import Room
from gateway.runtime import SCOPE_KEY, Runtime, runtime_of
from protocols.smtp import AsyncEmailConsumer

logger = logging.getLogger(__name__)


class RoomEmailConsumer(AsyncEmailConsumer):
    async def reject(self, code: int, reason: str) -> None:
        metrics.rejects.labels("email").inc()
        await super().reject(code, reason)

    @classmethod
    async def recipient_refusal(cls, scope: dict) -> str | None:
        route = scope["route"]["kwargs"]
        if route.get("token") is None:  # the open address: the room as read in the last moment
            return _refusal(route, scope["mail_from"], await runtime_of(scope).mail_rules(route["room"]))
        # A secret address is checked against the room as it is now: a rotated secret stops at once.
        return _refusal(route, scope["mail_from"], await database_sync_to_async(mail_rules)(route["room"]))

    async def receive(self, content: bytes) -> None:
        room, mail_from = self.scope["route"]["kwargs"]["room"], self.scope["mail_from"]
        runtime = self.runtime = runtime_of(self.scope)
        # Cheapest first: the rate before reading anything, the caps before parsing, the parse in a worker.
        if not runtime.limits.allow("MAIL_SENDER", f"{mail_from.lower()} {room}"):  # per sender and room
            too_many = f"4.7.1 too many mails from you ({limits.describe('MAIL_SENDER')}), try later"
            return await self.reject(451, too_many)
        try:
            mail_caps.check(content, caps())
            mail = await runtime.mail_readers.parse(
                content,
                mail_from,
                settings.EMAIL_DOMAIN,
                budget=settings.MAIL_PARSE_TIMEOUT,
                workers=settings.MAIL_PARSE_WORKERS,
            )
            if not mail.text:
                raise UnreadableMail(NOTHING_TO_POST)
        except (mail_caps.OverCap, UnreadableMail) as exc:  # the mail itself: a permanent refusal
            logger.info("Mail from %r for room %s refused: %s", mail_from, room, exc)
            metrics.mail_refusals.labels(_refusal_reason(exc)).inc()
            return await self.reject(554, f"5.6.0 {exc}")
        if mail.automatic:
            # Accepted and dropped: refusing would make the sending server bounce, which loops.
            logger.info("Auto-generated mail for room %s not posted: %r", room, mail.automatic)
            return await self.accept()
        rules = await runtime.mail_rules(room)
        if rules is not None and not rules.email_sender_allowed(mail.address):
            # The allowlist holds for the address the room shows (the From header), not only the envelope's.
            logger.info("Mail for room %s refused: its From, %r, is not on the allowlist", room, mail.address)
            return await self.reject(550, "5.7.1 the From address may not post to this room")
        too_much = attachments.over_limits(
            mail.attachments,
            count=settings.MAIL_MAX_ATTACHMENTS,
            each=settings.MAIL_MAX_ATTACHMENT_BYTES,
            total=settings.MAIL_MAX_ATTACHMENTS_BYTES,
        )
        if too_much:  # refused whole, never posted without them: the sender learns at once what was wrong
            logger.info("Mail from %r for room %s refused: %s", mail_from, room, too_much)
            metrics.mail_refusals.labels("attachments").inc()
            return await self.reject(552, f"5.3.4 {too_much}")
        try:
            await self._post(room, mail)
        except rooms.RateLimited as exc:
            return await self.reject(451, f"4.7.1 {exc}")
        except rooms.InvalidMessage as exc:
            return await self.reject(554, f"5.6.0 {exc}")
        except rooms.UNAVAILABLE as exc:  # the services are down, not the mail: the sending server retries
            logger.warning("Mail for room %s not posted, services unavailable: %r", room, exc)
            return await self.reject(451, "4.3.0 the room cannot take mail right now, try again later")
        except Exception as exc:  # neither the mail's fault nor an outage: retrying would fail the same way
            logger.exception("Mail for room %s could not be posted", room)
            await deadletters.park_mail(self.scope["rcpt_to"], content, f"{type(exc).__name__}: {exc}")
            return await self.reject(554, "5.3.0 the mail could not be posted; it is kept for the operator")
        await self.accept()

    async def _post(self, room: str, mail: MailPost) -> None:
        """The mail's attachments stored, then its message posted with links to them (``data.attachments``).
        Attachments of a message that is not posted (refused, or posted before: a resent mail) are deleted."""
        text = truncated(mail.text, settings.MESSAGE_MAX_LENGTH)  # a long mail is posted, visibly cut
        if not mail.attachments:
            await self.runtime.rooms.post(room, text, sender=mail.sender, source="email", key=mail.key)
            return
        stored = await asyncio.to_thread(attachments.write, room, mail.attachments)
        await database_sync_to_async(attachments.record)(room, stored)
        data = {"attachments": attachments.described(room, stored)}
        try:
            event = await self.runtime.rooms.post(
                room, text, sender=mail.sender, source="email", data=data, key=mail.key
            )
        except BaseException:
            await _discard(stored)
            raise
        if event.get("data") == data:
            await database_sync_to_async(attachments.link)(room, event["id"], stored)
        else:  # the same mail, posted before: its first message keeps its own attachments
            await _discard(stored)


class RoomEmailApplication:
    """``RoomEmailConsumer`` served with ``runtime``. The SMTP server asks a recipient's check
    (``recipient_refusal``, at RCPT time) with a scope of its own, outside the application and its
    middleware, so the route's application brings the runtime to it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.consumer = RoomEmailConsumer.as_asgi()

    def __call__(self, scope: dict, receive, send):
        return self.consumer(scope, receive, send)

    async def recipient_refusal(self, scope: dict) -> str | None:
        return await RoomEmailConsumer.recipient_refusal({**scope, SCOPE_KEY: self.runtime})


async def _discard(stored: list) -> None:
    try:
        await database_sync_to_async(attachments.discard)(stored)
    except Exception:  # the database is down: the rows (message unset) are the operator's to prune
        logger.warning("Attachments of an unposted mail were not deleted", exc_info=True)


def _refusal_reason(exc: Exception) -> str:
    if isinstance(exc, mail_caps.OverCap):
        return "cap"
    return "budget" if isinstance(exc, mail_workers.OverBudget) else "unreadable"


@functools.cache
def caps() -> mail_caps.MailCaps:
    return mail_caps.MailCaps(
        headers=settings.MAIL_MAX_HEADERS,
        header_length=settings.MAIL_MAX_HEADER_LENGTH,
        mime_header_length=settings.MAIL_MAX_MIME_HEADER_LENGTH,
        encoded_words=settings.MAIL_MAX_ENCODED_WORDS,
        parts=settings.MAIL_MAX_PARTS,
        depth=settings.MAIL_MAX_MIME_DEPTH,
    )


NO_SUCH_RECIPIENT = "550 5.1.1 No such recipient here"
SENDER_NOT_ALLOWED = "550 5.7.1 This sender may not post to this room"


def _refusal(route: dict, mail_from: str, room: Room | None) -> str | None:
    """The room's own rules: it exists (or may be created), the address is open or secret, the sender allowed.

    A room that takes mail only at its secret address answers at its plain address, and at a wrong
    secret one, exactly as a room that does not exist: the replies tell no sender which rooms exist."""
    token = route.get("token")
    if room is None:
        return None if settings.ROOMS_AUTO_CREATE and token is None else NO_SUCH_RECIPIENT
    if token is None and not room.email_open:
        return NO_SUCH_RECIPIENT
    if token is not None and not secrets.compare_digest(token, room.email_token):
        return NO_SUCH_RECIPIENT
    if not room.email_sender_allowed(mail_from):
        return SENDER_NOT_ALLOWED
    return None
