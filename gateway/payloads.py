"""What an MQTT payload on ``rooms/<room>/in`` or ``rooms/<room>/in/<device>`` means (docs/rooms.md, "MQTT")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .validation import InvalidMessage, check_data, clean_sender, clean_text, parse_json, safe_key

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
        return Post(text=clean_text(text), sender=DEFAULT_SENDER)
    try:
        document = parse_json(text)
    except InvalidMessage:
        raise
    except ValueError as exc:
        if start == "[":  # "[alarm] door open" is text
            return Post(text=clean_text(text), sender=DEFAULT_SENDER)
        raise InvalidMessage(f"payload looks like JSON but is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidMessage("a JSON payload must be an object")
    # Checked here, where it comes in: the sender and key are used (rate limits, digests) before the post.
    sender = clean_sender(document.get("sender"), DEFAULT_SENDER)
    key = document.get("id")
    if key is not None and (not isinstance(key, (str, int)) or isinstance(key, bool)):
        raise InvalidMessage("'id' must be a string or a number")
    key = safe_key(key)
    if "message" in document:
        return Post(text=clean_text(document["message"]), sender=sender, key=key)
    # A reading: every field but the envelope ("sender", "id") is data.
    reading = check_data({name: value for name, value in document.items() if name not in ENVELOPE})
    if not reading:
        raise InvalidMessage("a JSON object without 'message' must carry reading fields")
    return Post(text=clean_text(render_reading(reading)), sender=sender, data=reading, key=key)
