"""Route ``email`` scopes by recipient address; the SMTP adapter asks ``accepts()`` at RCPT time."""

from __future__ import annotations

from typing import Any

from ..routing import PatternRouter, Route

# A capture in an address is one dot-free part of the local part or one domain label run.
_PART = "[^@]+"


def address(pattern: str, application: Any) -> Route:
    """A route such as ``address("<room:room>@example.com", RoomConsumer.as_asgi())``.

    The domain is matched case-insensitively (write it in lower case); the local part exactly.
    """
    return Route(pattern, application, segment=_PART)


class EmailToRouter(PatternRouter):
    """Like ``URLRouter``, for the ``rcpt_to`` of an ``email`` scope."""

    scope_key = "rcpt_to"

    def normalize(self, value: str) -> str:
        local, at, domain = value.rpartition("@")
        return f"{local}{at}{domain.lower()}" if at else value

    def accepts(self, recipient: str) -> bool:
        return self.resolve(recipient) is not None
