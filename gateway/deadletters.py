"""Parking poison messages: kept in the ``DeadLetter`` table (the admin shows them) so that their way in can
move on: the MQTT adapter's ``park`` hook, and mail that failed to post for no reason of its own."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async

from protocols.mqtt import ParkedMessage

from . import metrics
from .models import DeadLetter

logger = logging.getLogger(__name__)


def storable(text: str, most: int) -> str:
    """``text`` cut to ``most`` characters, with what no database stores (NUL, lone surrogates) escaped."""
    text = text[:most].replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _keep(source: str, topic: str, payload: bytes, reason: str, error: str, attempts: int) -> None:
    DeadLetter.objects.create(
        source=source,
        topic=storable(topic, 300),
        payload=payload[: DeadLetter.PAYLOAD_KEPT],
        size=len(payload),
        reason=storable(reason, 200),
        error=storable(error, 10_000),
        attempts=attempts,
    )


async def park_mqtt(parked: ParkedMessage) -> None:
    """Keep ``parked`` for an operator (the admin's dead letters) and count it. Raises while the
    database is down: the adapter then keeps the message and serves it again."""
    await database_sync_to_async(_keep)(
        "mqtt", parked.topic, parked.payload, parked.reason, parked.error, parked.attempts
    )
    metrics.mqtt_parked.inc()
    logger.error(
        "Parked the MQTT message on %s (%d bytes) after %s: %s; see the dead letters in the admin",
        parked.topic,
        len(parked.payload),
        parked.reason,
        parked.error,
    )


async def park_mail(recipient: str, content: bytes, error: str) -> None:
    """Keep a mail that could not be posted for no fault the gateway could name (a bug, not the mail's
    size, syntax or sender): the sender is told it failed for good, the operator has it to look at."""
    await database_sync_to_async(_keep)("email", recipient, content, "failed to post", error, 1)
    metrics.mail_refusals.labels("failed").inc()
    logger.error(
        "Parked a mail for %s (%d bytes): %s; see the dead letters in the admin", recipient, len(content), error
    )
