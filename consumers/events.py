"""A room as Server-Sent Events, for clients that cannot hold a WebSocket: ``/api/rooms/<room>/events``."""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.http import AsyncHttpConsumer

from gateway import access, metrics, rooms
from protocols.consumer import DirectDispatch

from .hub import get_hub
from .outgoing import Outbox, Outgoing
from .params import after_id
from .stream import RoomStream

DELIVERIES = metrics.deliveries.labels("sse")

KEEPALIVE_SECONDS = 15


def event_frame(message_id: int, data: str) -> bytes:
    """One SSE event; the id lets the browser send ``Last-Event-ID`` when it reconnects."""
    return f"id: {message_id}\nevent: message\ndata: {data}\n\n".encode()


class RoomEventsConsumer(DirectDispatch, AsyncHttpConsumer):
    """Stream the room: with ``Last-Event-ID`` (or ``?after=``) first what was missed, then live messages."""

    channel_layer_alias = None  # live messages come from the process's hub

    async def http_request(self, message: dict) -> None:
        # Unlike AsyncHttpConsumer's, the response stays open after handle(): room events keep arriving.
        if not message.get("more_body"):
            await self.handle(b"")

    async def handle(self, body: bytes) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        verdict = await access.averdict(self.room, await access.scope_user(self.scope))
        if verdict is not access.Verdict.OK:
            status = 404 if verdict is access.Verdict.MISSING else 403
            body = rooms.to_json({"type": "error", "error": verdict.value}).encode()
            await self.send_response(status, body, headers=[(b"Content-Type", b"application/json")])
            return
        after = after_id(self.scope)
        await self.send_headers(
            headers=[
                (b"Content-Type", b"text/event-stream; charset=utf-8"),
                (b"Cache-Control", b"no-cache"),
                (b"X-Accel-Buffering", b"no"),  # nginx: do not buffer the stream
            ]
        )
        await self.send_body(b"retry: 2000\n\n", more_body=True)
        self.outbox = Outbox(self._send_event)
        self.stream = RoomStream(self.room, self.deliver)
        self.hub = get_hub()
        audience = await self.hub.join(self.room, self)
        missed, start = ([], audience.last_id) if after is None else await audience.catch_up(after)
        self.deliver(missed)
        self.stream.begin(start)
        self.keepalive = asyncio.get_running_loop().create_task(self._keepalive())

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await self.send_body(b": keepalive\n\n", more_body=True)

    def take_messages(self, items: list[Outgoing]) -> None:
        self.stream.push(items)

    def take_presence(self, item: Outgoing) -> None:
        if self.stream.begun:  # before: the history comes first
            self.outbox.put(f"event: presence\ndata: {item.text}\n\n".encode())

    def deliver(self, items: list[Outgoing]) -> None:
        for item in items:
            self.outbox.put(event_frame(item.id, item.text))
        DELIVERIES.inc(len(items))

    async def _send_event(self, event: bytes) -> None:
        await self.send_body(event, more_body=True)

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
