"""A room as Server-Sent Events, for clients that cannot hold a WebSocket: ``/api/rooms/<room>/events``."""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.http import AsyncHttpConsumer

from fanout.outgoing import Outbox, Outgoing
from gateway import access, metrics, rooms
from gateway.backlog import max_backlog
from gateway.daphne_io import BACKLOG_EXTENSION
from gateway.runtime import runtime_of
from protocols.consumer import DirectDispatch

from .origins import WRONG_HOST_ERROR, allowed_host
from .params import after_id

DELIVERIES = metrics.deliveries.labels("sse")

KEEPALIVE_SECONDS = 15
CLOSE_GRACE_SECONDS = 1.0  # for a reader too far behind to take the end of its stream (as autobahn's close handshake)


def event_frame(message_id: int, data: str) -> bytes:
    """One SSE event; the id lets the browser send ``Last-Event-ID`` when it reconnects."""
    return f"id: {message_id}\nevent: message\ndata: {data}\n\n".encode()


class RoomEventsConsumer(DirectDispatch, AsyncHttpConsumer):
    """Stream the room: with ``Last-Event-ID`` (or ``?after=``) first what was missed, then live messages.

    A reader more than ``READER_MAX_BACKLOG`` bytes behind has its stream ended (docs/rooms.md, "Slow
    readers"); the client reconnects with the last id it saw and catches up."""

    channel_layer_alias = None  # live messages come from the process's hub

    async def http_request(self, message: dict) -> None:
        # Unlike AsyncHttpConsumer's, the response stays open after handle(): room events keep arriving.
        if not message.get("more_body"):
            await self.handle(b"")

    async def handle(self, body: bytes) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        if not allowed_host(self.scope):
            return await self.refuse(400, WRONG_HOST_ERROR)
        runtime = runtime_of(self.scope)
        verdict = await runtime.verdicts(self.room, await access.scope_user(self.scope))
        if verdict is not access.Verdict.OK:  # a members-only room looks missing to outsiders
            return await self.refuse(404, verdict.value)
        after = after_id(self.scope)
        await self.send_headers(
            headers=[
                (b"Content-Type", b"text/event-stream; charset=utf-8"),
                (b"Cache-Control", b"no-cache"),
                (b"X-Accel-Buffering", b"no"),  # nginx: do not buffer the stream
            ]
        )
        limit, watcher = max_backlog(), self.scope.get("extensions", {}).get(BACKLOG_EXTENSION)
        self.backlog = watcher["watch"](limit, self.too_far_behind) if watcher else None  # under daphne
        self.outbox = Outbox(self._send_event, limit, self.too_far_behind)
        self.ending: asyncio.Task | None = None
        self.hub = runtime.hub
        self.stream = self.hub.stream(self.room, self.deliver)
        audience = await self.hub.join(self.room, self)
        missed, start = ([], audience.last_id) if after is None else await audience.catch_up(after)
        # Where this stream stands before any event (an id with no data sets the browser's Last-Event-ID
        # and dispatches nothing): a reader who then sees no message reconnects from here, missing none.
        await self.send_body(b"retry: 2000\nid: %d\n\n" % (start if after is None else after), more_body=True)
        self.deliver(missed)
        self.stream.begin(start)
        self.keepalive = asyncio.get_running_loop().create_task(self._keepalive())

    async def refuse(self, status: int, error: str) -> None:
        body = rooms.to_json({"type": "error", "error": error}).encode()
        await self.send_response(status, body, headers=[(b"Content-Type", b"application/json")])

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await self.send_body(b": keepalive\n\n", more_body=True)

    def take_messages(self, items: list[Outgoing]) -> None:
        self.stream.push(items)

    def take_presence(self, item: Outgoing) -> None:
        if self.stream.begun:  # before: the history comes first
            event = f"event: presence\ndata: {item.text}\n\n".encode()
            self.outbox.put(event, len(event))

    def deliver(self, items: list[Outgoing]) -> None:
        if items:  # one write a batch
            events = b"".join(event_frame(item.id, item.text) for item in items)
            self.outbox.put(events, len(events))
        DELIVERIES.inc(len(items))

    async def _send_event(self, events: bytes) -> None:
        backlog = self.backlog
        if backlog is not None and backlog.paused and not backlog.take(len(events)):
            return  # too far behind: the stream is ending
        await self.send_body(events, more_body=True)

    def too_far_behind(self) -> None:
        """Past ``READER_MAX_BACKLOG`` (waiting here, or held by the server's connection): what waits is
        dropped and the response ends after what the connection holds already."""
        if self.ending is not None:
            return
        metrics.slow_readers.labels("sse").inc()
        self.outbox.close()
        self.ending = asyncio.get_running_loop().create_task(self._end())

    async def _end(self) -> None:
        keepalive = getattr(self, "keepalive", None)
        if keepalive is not None:
            keepalive.cancel()
        if self.backlog is not None:
            self.backlog.release()
        await self.send_body(b"", more_body=False)
        if self.backlog is not None:
            self.backlog.close(CLOSE_GRACE_SECONDS)

    async def disconnect(self) -> None:
        if hasattr(self, "hub"):
            self.hub.leave(self.room, self)
            self.stream.close()
            self.outbox.close()
        keepalive = getattr(self, "keepalive", None)
        if keepalive is not None:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
