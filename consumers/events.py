"""A room as Server-Sent Events, for clients that cannot hold a WebSocket: ``/api/rooms/<room>/events``."""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.http import AsyncHttpConsumer

from gateway import access, metrics, rooms

from .params import after_id
from .stream import RoomStream, stay_in_group

KEEPALIVE_SECONDS = 15


def event_frame(message_id: int, data: str) -> bytes:
    """One SSE event; the id lets the browser send ``Last-Event-ID`` when it reconnects."""
    return f"id: {message_id}\nevent: message\ndata: {data}\n\n".encode()


class RoomEventsConsumer(AsyncHttpConsumer):
    """Stream the room: with ``Last-Event-ID`` (or ``?after=``) first what was missed, then live messages."""

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
        self.group = rooms.group_name(self.room)
        after = after_id(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_headers(
            headers=[
                (b"Content-Type", b"text/event-stream; charset=utf-8"),
                (b"Cache-Control", b"no-cache"),
                (b"X-Accel-Buffering", b"no"),  # nginx: do not buffer the stream
            ]
        )
        frames = [b"retry: 2000\n\n"]
        if after is not None:
            missed = await rooms.history(self.room, after=after, limit=rooms.CATCH_UP_LIMIT)
            frames += [event_frame(m["id"], rooms.to_json(m)) for m in missed]
            self.stream = RoomStream(self.room, missed[-1]["id"] if missed else after)
        else:
            self.stream = RoomStream(self.room, await rooms.last_id(self.room))
        await self.send_body(b"".join(frames), more_body=True)
        loop = asyncio.get_running_loop()
        self.keepalive = loop.create_task(self._keepalive())
        self.refresher = loop.create_task(stay_in_group(self.channel_layer, self.group, self.channel_name))

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await self.send_body(b": keepalive\n\n", more_body=True)

    async def room_message(self, event: dict) -> None:
        for message_id, text in await self.stream.follow(event["id"], event["text"]):
            await self.send_body(event_frame(message_id, text), more_body=True)
            metrics.deliveries.labels("sse").inc()

    async def room_presence(self, event: dict) -> None:
        await self.send_body(f"event: presence\ndata: {event['text']}\n\n".encode(), more_body=True)

    async def disconnect(self) -> None:
        for task in (getattr(self, "keepalive", None), getattr(self, "refresher", None)):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
