"""What a long-lived WebSocket keeps: its middleware stack, made lean.

A WebSocket (or an event stream) lives for hours, and whatever its application instance holds is held
that long, by every connection. In Channels' stock stack most of that is left over from the handshake:

- ``AllowedHostsOriginValidator(AuthMiddlewareStack(inner))`` is five middlewares, each of which awaits
  the next one for the whole life of the connection, so each keeps its coroutine frame and (four of
  them) a copy of the scope of their own. ``WebsocketAuthStack`` does the same checks and puts the same
  ``cookies``, ``session`` and ``user`` in the scope, in one frame and one copy.
- A consumer's ``await_many_dispatch`` runs every ``receive()`` in a task of its own and waits for it with
  ``asyncio.wait`` (futures, callbacks, a set), even when there is only one thing to receive from:
  the gateway's consumers, whose live messages come from the hub, use ``protocols.consumer.DirectDispatch``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import urlparse

from channels.auth import UserLazyObject, get_user
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.http import parse_cookie
from django.utils.functional import LazyObject


class WebsocketAuthStack:
    """``AllowedHostsOriginValidator(AuthMiddlewareStack(inner))`` for WebSocket scopes, in one step.

    The same rules as Channels' middlewares, which it uses where it can: a handshake whose ``Origin`` is
    not one of ``ALLOWED_HOSTS`` is refused (403) by Channels' ``WebsocketDenier``; the scope gets
    ``cookies`` (as ``request.COOKIES``), ``session`` (a lazy ``SESSION_ENGINE`` store) and ``user`` (the
    session's user, else ``AnonymousUser``), unless they are there already. Channels' session middleware
    also wraps ``send`` to save the session, but only on ``http.response.start``, which a WebSocket never
    sends: here ``send`` goes straight through. Without a session key there is no one to look up, so the
    user is resolved without a trip to the database thread.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.origins = AllowedHostsOriginValidator(inner)  # its rules, from ALLOWED_HOSTS

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("You cannot use OriginValidator on a non-WebSocket connection")
        if not self.origins.valid_origin(self._origin(scope)):
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(await self._with_user(scope), receive, send)

    @staticmethod
    def _origin(scope: dict) -> Any:
        origin = None
        for name, value in scope.get("headers", []):
            if name == b"origin":
                try:
                    origin = urlparse(value.decode("latin1"))
                except UnicodeDecodeError:
                    pass
        return origin

    async def _with_user(self, scope: dict) -> dict:
        """A copy of ``scope`` with ``cookies``, ``session`` and ``user`` (what CookieMiddleware,
        SessionMiddleware and AuthMiddleware add)."""
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
        if scope["session"].session_key is None:
            # get_user() without the thread: with no session key nothing is loaded, not even the session
            scope["user"]._wrapped = get_user.func(scope)
        else:
            scope["user"]._wrapped = await get_user(scope)
        return scope
