"""The one validator every way in uses before a post may join a batch (docs/rooms.md, "Bad input").

A post is stored in a batch with others, so anything the database could refuse is settled here, for
each post alone: what is not text (a lone surrogate) or not JSON (NaN, Infinity) is refused; control
characters in text meant for people are replaced, so the text stays readable and storable; structured
data is refused whole when it holds what cannot be stored as it is, or is too deep or too large."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from django.conf import settings

REPLACEMENT = "\ufffd"
# Text keeps tab, newline and carriage return; a sender or a display name is one line, so keeps none.
TEXT_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
NAME_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
SURROGATES = re.compile("[\ud800-\udfff]")
SAFE_KEY = re.compile("[\x20-\x7e]{1,300}\\Z")  # printable ASCII that fits the column: kept as it is
NAME_MAX_LENGTH = 200


class InvalidMessage(ValueError):
    """Input that cannot become a room message; its text is shown to whoever sent it."""


def is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text that UTF-8 (and so every database and socket) can carry."""
    try:
        value.encode()  # in C, several times faster than searching for surrogates
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: Any, what: str = "'message'") -> str:
    """A message text: refused unless it is non-empty text; control characters but tab and line breaks
    shown as U+FFFD. Not trimmed; its length is the room service's to check."""
    if not isinstance(text, str):
        raise InvalidMessage(f"{what} must be non-empty text")
    if not is_text(text):
        raise InvalidMessage(f"{what} holds a lone surrogate (a \\ud800-\\udfff escape alone), which is not text")
    if not text.isprintable():  # the common case skips the substitution
        text = TEXT_CONTROLS.sub(REPLACEMENT, text)
    if not text.strip():
        raise InvalidMessage(f"{what} must be non-empty text")
    return text


def clean_sender(sender: Any, default: str = "anonymous") -> str:
    """Who sent a post: text (anything else is refused, never stringified), trimmed, one line, at most
    200 characters; ``default`` when it is missing, empty or only white space."""
    if sender is None or sender == "":
        return default
    if not isinstance(sender, str):
        raise InvalidMessage("'sender' must be text")
    if not is_text(sender):
        raise InvalidMessage("'sender' holds a lone surrogate (a \\ud800-\\udfff escape alone), which is not text")
    return _one_line(sender) or default


def clean_name(name: Any, default: str = "anonymous") -> str:
    """A display name that is never refused (presence is a courtesy): what cannot be stored is replaced."""
    if not isinstance(name, str):
        return default
    return _one_line(SURROGATES.sub(REPLACEMENT, name)) or default


def _one_line(text: str) -> str:
    return NAME_CONTROLS.sub(REPLACEMENT, text.strip())[:NAME_MAX_LENGTH].strip()


def safe_key(key: Any) -> str | None:
    """An idempotency key (a device's ``id``, a mail's Message-ID) as stored: short printable ASCII as it
    is, anything else as a hash of it, so no key can fail a batch or collide by being cut short."""
    if key is None:
        return None
    key = str(key)
    if SAFE_KEY.match(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_data(data: Any) -> dict | None:
    """Structured data (an MQTT reading) as it will be stored: a JSON object of at most ``DATA_MAX_DEPTH``
    levels and ``DATA_MAX_BYTES`` bytes, its numbers finite, its strings text without NUL. Refused whole
    otherwise: data is for machines, and a changed value would be a wrong one."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidMessage("'data' must be a JSON object")
    max_depth = settings.DATA_MAX_DEPTH
    pending: list[tuple[dict | list, int]] = [(data, 1)]
    while pending:  # a loop, not recursion: any depth is refused without a RecursionError
        container, depth = pending.pop()
        if depth > max_depth:
            raise InvalidMessage(f"'data' is nested deeper than {max_depth} levels")
        if isinstance(container, dict):
            for name in container:
                _check_string(name)
        for item in container.values() if isinstance(container, dict) else container:
            if isinstance(item, (dict, list)):
                pending.append((item, depth + 1))
            else:
                _check_scalar(item)
    size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
    if size > settings.DATA_MAX_BYTES:
        raise InvalidMessage(f"'data' is {size} bytes as JSON, over {settings.DATA_MAX_BYTES}")
    return data


def _check_scalar(value: Any) -> None:
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage("numbers in 'data' must be finite (no NaN or Infinity)")
    elif value is not None and not isinstance(value, (int, bool)):
        raise InvalidMessage(f"'data' may hold only JSON values, not {type(value).__name__}")


def _check_string(value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidMessage("the names in 'data' must be text")
    if "\x00" in value:
        raise InvalidMessage("'data' may not contain NUL characters")
    if not is_text(value):
        raise InvalidMessage("'data' holds a lone surrogate (a \\ud800-\\udfff escape alone), which is not text")


def _no_constant(name: str) -> Any:
    raise InvalidMessage(f"{name} is not JSON: numbers must be finite")


def parse_json(document: str | bytes) -> Any:
    """A JSON document from outside: ``ValueError`` if it is not JSON; ``InvalidMessage`` if it nests
    deeper than ``DATA_MAX_DEPTH`` levels (one too deep for the parser itself, whose RecursionError was
    a 500 or a closed socket, included) or holds NaN or Infinity (Python's json takes them; JSON and
    PostgreSQL do not)."""
    limit = settings.DATA_MAX_DEPTH
    try:
        value = json.loads(document, parse_constant=_no_constant)
    except RecursionError:
        too_deep = True
    else:
        too_deep = _deeper_than(value, limit)
    if too_deep:
        raise InvalidMessage(f"JSON nested deeper than {limit} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` levels (``{}`` is one), looked at level by level,
    never further down than ``limit + 1``."""
    level = [value]
    for _ in range(limit + 1):
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            return False
        level = [item for each in containers for item in (each.values() if isinstance(each, dict) else each)]
    return True
