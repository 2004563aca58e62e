"""What a long-lived WebSocket keeps: its middleware stack, made lean.

A WebSocket (or an event stream) lives for hours, and whatever its application instance holds is held
that long, by every connection. In Channels' stock stack most of that is left over from the handshake:

- ``AllowedHostsOriginValidator(AuthMiddlewareStack(inner))`` is five middlewares, each of which awaits
  the next one for the whole life of the connection, so each keeps its coroutine frame and (four of
  them) a copy of the scope of their own. ``WebsocketAuthStack`` checks the origin (more strictly:
  scheme, host and port) and puts the same ``cookies``, ``session`` and ``user`` in the scope, in one
  frame and one copy.
- A consumer's ``await_many_dispatch`` runs every ``receive()`` in a task of its own and waits for it with
  ``asyncio.wait`` (futures, callbacks, a set), even when there is only one thing to receive from:
  the gateway's consumers, whose live messages come from the hub, use ``protocols.consumer.DirectDispatch``.
- Every router and middleware that does ``return await inner(scope, receive, send)`` stays suspended in
  that ``await`` until the connection ends: a coroutine frame each, holding the scope it was given.
  ``LeanProtocolTypeRouter``, ``WebsocketAuthStack`` and ``LeanURLRouter`` (and ``DirectDispatch.as_asgi``)
  do their work when called and *return* the inner application's coroutine instead: what runs for the
  connection's life is the consumer's own coroutine and nothing above it. They are still ASGI
  applications (``asgiref.sync.markcoroutinefunction``: awaiting what they return is awaiting the app).
"""

from __future__ import annotations

from collections.abc import Awaitable
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import markcoroutinefunction
from channels.auth import UserLazyObject, get_user
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.urls.exceptions import Resolver404
from django.utils.functional import LazyObject

DEFAULT_PORTS = {"http": 80, "https": 443}


Origin = tuple[str, str, int]  # scheme, host, port: what the same-origin rule compares


def origin_of(url: str) -> Origin | None:
    """``scheme://host[:port]`` as (scheme, host, port), the port filled in; None if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname.lower(), port


class WebsocketAuthStack:
    """``AllowedHostsOriginValidator(AuthMiddlewareStack(inner))`` for WebSocket scopes, in one step, with
    origins compared in full.

    A handshake is refused (403, by Channels' ``WebsocketDenier``) unless its ``Host`` is one of
    ``ALLOWED_HOSTS`` and its ``Origin`` is the page's own origin, the same scheme (ws: http, wss:
    https, or https when ``SECURE_PROXY_SSL_HEADER`` says so), host and port as the request, or one of
    ``CSRF_TRUSTED_ORIGINS``. A page on another port or scheme of the same host is another origin (it
    would carry the session cookie all the same). ``ALLOWED_HOSTS = ['*']`` (development) lets any
    origin in. The scope gets ``cookies`` (as ``request.COOKIES``), ``session`` (a lazy
    ``SESSION_ENGINE`` store) and ``user`` (the session's user, else ``AnonymousUser``), unless they
    are there already. Channels' session middleware also wraps ``send`` to save the session, but only
    on ``http.response.start``, which a WebSocket never sends: here ``send`` goes straight through.
    Without a session key there is no one to look up, so the user is resolved without a trip to the
    database thread.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.allowed_hosts = list(settings.ALLOWED_HOSTS)
        self.any_origin = "*" in self.allowed_hosts
        self.trusted = {origin_of(url) for url in settings.CSRF_TRUSTED_ORIGINS} - {None}
        proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        self.proxy_header = None
        if proxy:  # ("HTTP_X_FORWARDED_PROTO", "https") names the header x-forwarded-proto
            self.proxy_header = (proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode(), proxy[1])

    @markcoroutinefunction
    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[Any]:
        """The inner application's coroutine (or the denier's), not a frame of its own around it; with a
        session key, a coroutine that looks the user up first (the one case that must wait)."""
        if scope["type"] != "websocket":
            raise ValueError("You cannot use OriginValidator on a non-WebSocket connection")
        if not self.any_origin and not self.same_or_trusted_origin(scope):
            return WebsocketDenier()(scope, receive, send)
        own_session = "session" not in scope
        scope = self._with_session(scope)
        if scope["session"].session_key is None:
            # get_user() without the thread: with no session key there is nothing to load. A session of
            # our own without a key is empty (no cookie, or not a valid key): get_user() would find no
            # user id in it and answer AnonymousUser(), so that is the answer, without asking it.
            scope["user"]._wrapped = AnonymousUser() if own_session else get_user.func(scope)
            return self.inner(scope, receive, send)
        return self._after_user(scope, receive, send)

    async def _after_user(self, scope: dict, receive: Any, send: Any) -> Any:
        scope["user"]._wrapped = await get_user(scope)
        return await self.inner(scope, receive, send)

    def same_or_trusted_origin(self, scope: dict) -> bool:
        headers = {name: value for name, value in scope.get("headers", []) if name in (b"host", b"origin")}
        try:
            host = headers.get(b"host", b"").decode("latin1")
            origin = origin_of(headers[b"origin"].decode("latin1"))
        except (KeyError, UnicodeDecodeError):
            return False
        domain, _ = split_domain_port(host)
        if origin is None or not domain or not validate_host(domain, self.allowed_hosts):
            return False
        return origin == origin_of(f"{self.request_scheme(scope)}://{host}") or origin in self.trusted

    def request_scheme(self, scope: dict) -> str:
        """The scheme of the page that may open this socket: https behind TLS (itself, or a proxy)."""
        if scope.get("scheme") == "wss":
            return "https"
        if self.proxy_header:
            name, secure = self.proxy_header
            for header, value in scope.get("headers", []):
                if header == name:
                    return "https" if value.decode("latin1").split(",")[0].strip() == secure else "http"
        return "http"

    def _with_session(self, scope: dict) -> dict:
        """A copy of ``scope`` with ``cookies``, ``session`` and ``user`` (what CookieMiddleware,
        SessionMiddleware and AuthMiddleware add); the user is not resolved yet."""
        if "headers" not in scope:
            raise ValueError("WebsocketAuthStack was passed a scope that did not have a headers key")
        cookies = {}
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies = parse_cookie(value.decode("latin1"))
                break
        scope = dict(scope, cookies=cookies)
        if "session" not in scope:
            scope["session"] = LazyObject()
            store = import_module(settings.SESSION_ENGINE).SessionStore
            scope["session"]._wrapped = store(cookies.get(settings.SESSION_COOKIE_NAME))
        if "user" not in scope:
            scope["user"] = UserLazyObject()
        return scope


async def _raise(exc: Exception) -> None:
    raise exc


class LeanProtocolTypeRouter(ProtocolTypeRouter):
    """Channels' ``ProtocolTypeRouter`` that returns the protocol's application's coroutine instead of
    awaiting it. What the applications below do when called (routing, origin checks) happens when this
    is called; if it raises, the exception is raised where Channels' router raises it, in the awaited
    coroutine (the server's task for the connection), so the server handles it as it always did."""

    @markcoroutinefunction
    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[Any]:
        application = self.application_mapping.get(scope["type"])
        if application is None:
            return super().__call__(scope, receive, send)  # Channels' error, raised when awaited
        try:
            return application(scope, receive, send)
        except Exception as exc:
            return _raise(exc)


class LeanURLRouter(URLRouter):
    """Channels' ``URLRouter`` that returns the route's application's coroutine instead of awaiting it:
    the same matching, ``path_remaining`` and ``url_route`` (Channels' own code, made synchronous)."""

    @markcoroutinefunction
    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[Any]:
        path = scope.get("path_remaining", scope.get("path"))
        if path is None:
            raise ValueError("No 'path' key in connection scope, cannot route URLs")
        if "path_remaining" not in scope:  # the outermost router: handle root_path
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                raise ValueError(f"No route found for path {path!r}.")
            path = path[len(root_path) :]
        path = path.lstrip("/")
        for route in self.routes:
            try:  # a nested router without a match raises Resolver404: try the next route
                match = route.pattern.match(path)
                if match:
                    new_path, args, kwargs = match
                    kwargs.update(route.default_args)
                    outer = scope.get("url_route", {})
                    url_route = {"args": outer.get("args", ()) + args, "kwargs": {**outer.get("kwargs", {}), **kwargs}}
                    return route.callback(dict(scope, path_remaining=new_path, url_route=url_route), receive, send)
            except Resolver404:
                pass
        if "path_remaining" in scope:
            raise Resolver404(f"No route found for path {path!r}.")
        raise ValueError(f"No route found for path {path!r}.")
