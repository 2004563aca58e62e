"""Pattern routing shared by the topic and address routers, in the manner of Channels' ``URLRouter``.

Patterns use Django's path syntax: ``<name>`` captures one segment, ``<conv:name>``
uses a converter registered with ``django.urls.register_converter``, so one converter
(say ``room``) means the same thing in URLs, MQTT topics and mail addresses.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.urls.converters import get_converters

_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>")


class Pattern:
    """A compiled route pattern; ``match`` returns the converted captures and where the match ended."""

    def __init__(self, pattern: str, *, segment: str, prefix: bool = False) -> None:
        self.pattern = pattern
        self.converters: dict[str, Any] = {}
        parts, position = [], 0
        for found in _PARAMETER.finditer(pattern):
            parts.append(re.escape(pattern[position : found.start()]))
            regex = segment
            if found["converter"]:
                try:
                    converter = get_converters()[found["converter"]]
                except KeyError:
                    raise ImproperlyConfigured(
                        f"Route {pattern!r} uses unknown converter {found['converter']!r}"
                    ) from None
                self.converters[found["name"]] = converter
                regex = converter.regex
            parts.append(f"(?P<{found['name']}>{regex})")
            position = found.end()
        parts.append(re.escape(pattern[position:]))
        self.regex = re.compile("".join(parts) + ("" if prefix else r"\Z"))

    def match(self, value: str) -> tuple[dict[str, Any], int] | None:
        found = self.regex.match(value)
        if found is None:
            return None
        kwargs = {}
        for name, captured in found.groupdict().items():
            converter = self.converters.get(name)
            if converter is not None:
                try:
                    captured = converter.to_python(captured)
                except ValueError:
                    return None
            kwargs[name] = captured
        return kwargs, found.end()

    def __repr__(self) -> str:
        return f"<Pattern {self.pattern!r}>"


class Route:
    """One pattern and the application it leads to (a consumer or a nested router)."""

    def __init__(self, pattern: str, application: Any, *, segment: str) -> None:
        self.application = application
        self.pattern = Pattern(pattern, segment=segment, prefix=isinstance(application, PatternRouter))


class PatternRouter:
    """Routes a scope by one of its string fields; captures go to ``scope["route"]["kwargs"]``.

    A route's application may itself be a router of the same kind: its pattern
    is then a prefix and the rest of the value is routed by the inner router.
    """

    scope_key = ""

    CACHE_SIZE = 10_000  # values whose resolution is remembered (a busy adapter sees the same topics again)

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._resolved: dict[str, tuple[Any, dict[str, Any]] | None] = {}

    def normalize(self, value: str) -> str:
        return value

    def resolve(self, value: str) -> tuple[Any, dict[str, Any]] | None:
        """The application for ``value`` and its captured parameters, or None.

        Answers are remembered per value (converters are pure functions of the text), up to
        ``CACHE_SIZE`` values; after that the memory starts again."""
        try:
            found = self._resolved[value]
        except KeyError:
            found = self._match(value)
            if len(self._resolved) >= self.CACHE_SIZE:
                self._resolved.clear()
            self._resolved[value] = found
        return None if found is None else (found[0], dict(found[1]))

    def _match(self, value: str) -> tuple[Any, dict[str, Any]] | None:
        value = self.normalize(value)
        for route in self.routes:
            found = route.pattern.match(value)
            if found is None:
                continue
            kwargs, end = found
            if isinstance(route.application, PatternRouter):
                inner = route.application.resolve(value[end:])
                if inner is not None:
                    return inner[0], {**kwargs, **inner[1]}
                continue
            return route.application, kwargs
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        found = self.resolve(scope[self.scope_key])
        if found is None:
            raise ValueError(f"No route found for {self.scope_key} {scope[self.scope_key]!r}")
        application, kwargs = found
        outer = scope.get("route", {}).get("kwargs", {})
        scope = {**scope, "route": {"kwargs": {**outer, **kwargs}}}
        return await application(scope, receive, send)


def find_router(application: Any, scope_type: str, router_class: type) -> Any:
    """Find the ``router_class`` instance that handles ``scope_type`` inside an application.

    Looks through ``ProtocolTypeRouter`` mappings and middleware ``inner`` links, so an
    adapter server can ask the router what it routes (topics to subscribe, recipients to accept).
    """
    seen = 0
    while application is not None and seen < 32:
        if isinstance(application, router_class):
            return application
        mapping = getattr(application, "application_mapping", None)
        application = mapping.get(scope_type) if mapping is not None else getattr(application, "inner", None)
        seen += 1
    return None
