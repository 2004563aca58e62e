"""One channel-layer subscription per group per process, broadcast to that process's readers.

Stock Channels gives every reader a channel of its own, so a message to a room of N readers costs N
layer messages, N consumer dispatches and N thread-pool hops. Here the process holds one channel and
joins each group once: a group message arrives once, and every local reader is handed it with a plain
call, in the hub's task. Messages sent to a group must say which group it was (``"group"``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from gateway import metrics

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "hub"  # the layer's capacity setting for "hub.*" channels is the hub's backlog


class Reader(Protocol):
    async def group_event(self, message: dict) -> None:
        """A message to a group this reader joined. Runs in the hub's task: it must not wait on anything
        slow (a reader that needs the database hands that to a task of its own)."""


class Hub:
    """This process's readers of groups, behind one channel of the layer."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.readers: dict[str, set[Reader]] = {}
        self.channel: str | None = None
        self._membership = asyncio.Lock()  # joining and leaving the layer's groups, one at a time
        self._tasks: list[asyncio.Task] = []

    async def join(self, group: str, reader: Reader) -> None:
        """From now on ``reader`` gets the group's messages."""
        readers = self.readers.get(group)
        if readers is None:
            async with self._membership:
                if (readers := self.readers.get(group)) is None:
                    await self._start()
                    await self.layer.group_add(group, self.channel)
                    readers = self.readers[group] = set()
        readers.add(reader)

    def leave(self, group: str, reader: Reader) -> None:
        """The group itself is left at the next refresh that finds it empty: a reader who reconnects at
        once (a page reload) finds it still joined."""
        readers = self.readers.get(group)
        if readers is not None:
            readers.discard(reader)

    async def broadcast(self, message: dict) -> None:
        readers = self.readers.get(message.get("group", ""))
        if not readers:
            return
        for reader in tuple(readers):  # readers may leave meanwhile
            try:
                await reader.group_event(message)
            except Exception:  # one broken reader must not cost the others the message
                logger.exception("A reader of %s failed on a %s", message["group"], message.get("type"))
        if "at" in message:
            metrics.fanout_seconds.observe(time.time() - message["at"])

    async def _start(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel(CHANNEL_PREFIX)
            loop = asyncio.get_running_loop()
            # Contexts of their own, not the first reader's: they outlive it.
            self._tasks = [
                loop.create_task(self._receive(), context=contextvars.Context()),
                loop.create_task(self._refresh(), context=contextvars.Context()),
            ]

    async def _receive(self) -> None:
        delay = 0.1
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer is down (Redis restarting): wait, then listen again
                metrics.layer_errors.inc()
                logger.warning("Channel layer receive failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)  # backoff
                delay = min(delay * 2, 5)
                continue
            delay = 0.1
            await self.broadcast(message)

    async def _refresh(self) -> None:
        """Join the groups again now and then: memberships expire, and a restarted Redis forgot them.
        What readers missed meanwhile, their ``RoomStream`` fills in from the history."""
        while True:
            await asyncio.sleep(settings.GROUP_REFRESH_SECONDS)
            async with self._membership:
                for group, readers in list(self.readers.items()):
                    try:
                        if readers:
                            await self.layer.group_add(group, self.channel)
                        else:
                            del self.readers[group]
                            await self.layer.group_discard(group, self.channel)
                    except Exception:  # the layer is down: try again next time
                        logger.warning("Could not refresh group %s", group, exc_info=True)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (a process normally has one) on the default channel layer."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(get_channel_layer())
    return hub
