"""Dispatch for consumers without a channel layer: each event handled in the instance's own task.

A Channels ``AsyncConsumer`` runs ``await_many_dispatch([receive, channel_receive], dispatch)``, which
wraps every ``receive()`` in a task of its own and waits on it with ``asyncio.wait``, and its
``dispatch`` hops to the database thread (``aclose_old_connections``) before every handler. A
consumer with no channel layer (``channel_layer_alias = None``: one MQTT message, one mail, a
connection fed by a hub) has only ``receive()`` to wait on, so ``DirectDispatch`` awaits it in the
instance's own task and calls the handler directly: the same events, in the same order, with
nothing made or waited for in between. Database work goes through
``channels.db.database_sync_to_async``, which closes stale connections around every call; after a
handler raised, stale connections are closed before the exception goes on (a retry then starts on a
fresh one). With a channel layer, the consumer runs as Channels runs it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync, markcoroutinefunction
from channels.consumer import get_handler_name
from channels.db import aclose_old_connections
from channels.exceptions import StopConsumer

if TYPE_CHECKING:  # a mixin: what it extends, for the type checker
    from channels.consumer import AsyncConsumer as _Consumer
else:
    _Consumer = object


class DirectDispatch(_Consumer):
    """Mixed in before ``AsyncConsumer`` (or one of its subclasses)."""

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Callable[[dict, Any, Any], Awaitable[None]]:
        """Channels' ``as_asgi``, except that the application returns the new instance's coroutine
        instead of awaiting it: no frame of its own, holding the scope, for the connection's life."""

        def app(scope: dict, receive: Any, send: Any) -> Awaitable[None]:
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls  # type: ignore[attr-defined]  # as Channels' as_asgi sets them
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        functools.update_wrapper(app, cls, updated=())
        return markcoroutinefunction(app)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.channel_layer_alias is not None:
            return await super().__call__(scope, receive, send)
        self.scope = scope
        del scope  # kept by the instance only, which may let go of what it no longer needs
        self.channel_layer = None
        self.base_send = async_to_sync(send) if self._sync else send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict) -> None:
        if self.channel_layer_alias is not None:
            return await super().dispatch(message)
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            await aclose_old_connections()  # a broken connection is not kept for what comes next
            raise
