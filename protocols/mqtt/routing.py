"""Route ``mqtt`` scopes by topic, and tell the adapter which topic filters to subscribe to."""

from __future__ import annotations

from typing import Any

from ..routing import PatternRouter, Route

# A capture is one topic level; a ``path`` capture takes the rest of the topic (``#``).
_LEVEL = "[^/]+"


def topic(pattern: str, application: Any) -> Route:
    """A route such as ``topic("rooms/<room:room>/in", RoomConsumer.as_asgi())``."""
    return Route(pattern, application, segment=_LEVEL)


def _filter_for(pattern: str) -> str:
    levels = []
    for level in pattern.split("/"):
        if "<path:" in level:
            levels.append("#")
            break
        levels.append("+" if "<" in level else level)
    return "/".join(levels)


class MqttTopicRouter(PatternRouter):
    """Like ``URLRouter``, for the ``topic`` of an ``mqtt`` scope."""

    scope_key = "topic"

    def patterns(self) -> list[str]:
        """Every full pattern this router (and the routers nested in it) can route."""
        found = []
        for route in self.routes:
            if isinstance(route.application, MqttTopicRouter):
                found += [route.pattern.pattern + inner for inner in route.application.patterns()]
            else:
                found.append(route.pattern.pattern)
        return found

    def subscriptions(self) -> list[str]:
        """The topic filters an adapter must subscribe to, deduplicated, in route order."""
        return list(dict.fromkeys(_filter_for(pattern) for pattern in self.patterns()))
