"""Parking poison messages: the MQTT adapter's ``park`` hook keeps them in the ``DeadLetter`` table."""

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


def _keep(parked: ParkedMessage) -> None:
    DeadLetter.objects.create(
        source="mqtt",
        topic=storable(parked.topic, 300),
        payload=parked.payload[: DeadLetter.PAYLOAD_KEPT],
        size=len(parked.payload),
        reason=storable(parked.reason, 200),
        error=storable(parked.error, 10_000),
        attempts=parked.attempts,
    )


async def park_mqtt(parked: ParkedMessage) -> None:
    """Keep ``parked`` for an operator (the admin's dead letters) and count it. Raises while the
    database is down: the adapter then keeps the message and serves it again."""
    await database_sync_to_async(_keep)(parked)
    metrics.mqtt_parked.inc()
    logger.error(
        "Parked the MQTT message on %s (%d bytes) after %s: %s; see the dead letters in the admin",
        parked.topic,
        len(parked.payload),
        parked.reason,
        parked.error,
    )
