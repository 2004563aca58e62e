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

    async def refusal(self, scope: dict) -> str | None:
        """Why ``scope["rcpt_to"]`` is refused at RCPT time (an SMTP reply), or None to accept it.

        Beyond routing, the consumer class may look further (a database, an allowlist) with an async
        ``recipient_refusal(scope)`` classmethod returning a reply or None; it gets the route's kwargs.
        """
        found = self.resolve(scope["rcpt_to"])
        if found is None:
            return f"550 5.1.1 <{scope['rcpt_to']}>: no such recipient here"
        application, kwargs = found
        check = getattr(getattr(application, "consumer_class", application), "recipient_refusal", None)
        if check is None:
            return None
        return await check({**scope, "route": {"kwargs": kwargs}})
