"""What an MQTT payload on ``rooms/<room>/in`` means (see README, "MQTT")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .rooms import InvalidMessage

DEFAULT_SENDER = "device"
ENVELOPE = ("sender", "id")


@dataclass
class Post:
    text: str
    sender: str
    data: dict | None = None
    key: str | None = None  # the device's idempotency key, if it sent one


def render_reading(reading: dict[str, Any]) -> str:
    """A short text for a reading: ``temperature: 21.5, humidity: 40``."""
    return ", ".join(
        f"{name}: {value if isinstance(value, (str, int, float)) else json.dumps(value)}"
        for name, value in reading.items()
    )


def parse_payload(payload: bytes) -> Post:
    """UTF-8 text, a JSON object with ``message``, or a JSON reading (an object without it)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    start = text.lstrip()[:1]
    if start not in ("{", "["):
        return Post(text=text, sender=DEFAULT_SENDER)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if start == "[":  # "[alarm] door open" is text
            return Post(text=text, sender=DEFAULT_SENDER)
        raise InvalidMessage(f"payload looks like JSON but is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidMessage("a JSON payload must be an object")
    sender = document.get("sender") or DEFAULT_SENDER
    key = document.get("id")
    if key is not None and not isinstance(key, (str, int)):
        raise InvalidMessage("'id' must be a string or a number")
    if "message" in document:
        return Post(text=document["message"], sender=sender, key=None if key is None else str(key))
    # A reading: every field but the envelope ("sender", "id") is data.
    reading = {name: value for name, value in document.items() if name not in ENVELOPE}
    if not reading:
        raise InvalidMessage("a JSON object without 'message' must carry reading fields")
    return Post(text=render_reading(reading), sender=sender, data=reading, key=None if key is None else str(key))
