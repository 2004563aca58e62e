"""Request parameters the streaming consumers share."""

from __future__ import annotations

from urllib.parse import parse_qs


def after_id(scope: dict) -> int | None:
    """The message id a reader has already seen: ``Last-Event-ID`` (SSE) or ``?after=``; None if neither."""
    value = dict(scope.get("headers", [])).get(b"last-event-id", b"").decode("latin-1")
    if not value:
        value = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", [""])[0]
    try:
        return max(0, int(value)) if value else None
    except ValueError:
        return None
