"""Browser chat over WebSocket: ``/ws/chat/<room>/``."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from django.conf import settings

from gateway import access, limits, metrics, presence, rooms

from .hub import get_hub
from .lean import DirectDispatch
from .params import after_id
from .stream import RoomStream, reached

DELIVERIES = metrics.deliveries.labels("websocket")


class ChatConsumer(DirectDispatch, AsyncWebsocketConsumer):
    """Join a room: history first (``?after=<id>`` to catch up), then live messages.

    Live messages come from the process's hub (one layer subscription per room per process), so the
    consumer needs no channel of its own and each delivery is a plain call, with no dispatch."""

    channel_layer_alias = None

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        if await access.averdict(self.room, await access.scope_user(self.scope)) is not access.Verdict.OK:
            return await self.close()  # the handshake is refused with 403
        self.group = rooms.group_name(self.room)
        after = after_id(self.scope)
        await self.accept()
        self.stream = RoomStream(self.room, self.deliver)
        self.hub = get_hub()
        await self.hub.join(self.group, self)  # before reading the history: nothing falls between
        self.key = f"{self.hub.channel}#{id(self):x}"  # this connection, for presence and rate limits
        metrics.connections.labels("websocket").inc()
        limit = settings.HISTORY_ON_JOIN if after is None else rooms.CATCH_UP_LIMIT
        messages = await rooms.history(self.room, after=after, limit=limit)
        await self.send_json({"type": "history", "messages": messages})
        await self.stream.begin(await reached(self.room, messages, after))
        name = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("name", [""])[0]
        await presence.join(self.room, self.key, name)

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "hub"):
            return
        self.hub.leave(self.group, self)
        self.stream.close()
        if hasattr(self, "key"):
            metrics.connections.labels("websocket").dec()
            await presence.leave(self.room, self.key)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return await self.error("send text frames holding JSON")
        try:
            request = json.loads(text_data)
        except ValueError:
            return await self.error('invalid JSON: send {"message": "text"}')
        if not isinstance(request, dict) or "message" not in request:
            return await self.error('send a JSON object with a "message" field')
        ref = request.get("ref")  # the client's own id for this message, echoed in an error about it
        ref = ref if isinstance(ref, str) and len(ref) <= 100 else None
        if not limits.allow("WEBSOCKET", self.key):
            return await self.error(f"slow down: {limits.describe('WEBSOCKET')} per connection; not posted", ref)
        try:
            await rooms.post(self.room, request["message"], sender=request.get("sender"), source="websocket")
        except rooms.InvalidMessage as exc:
            await self.error(str(exc), ref)

    async def group_event(self, message: dict) -> None:
        if message["type"] == "room.messages":
            for message_id, text in message["messages"]:
                await self.stream.push(message_id, text)
        elif message["type"] == "room.presence" and self.stream.begun:  # before: the history comes first
            await self.send(text_data=message["text"])

    async def deliver(self, message_id: int, text: str) -> None:
        await self.send(text_data=text)
        DELIVERIES.inc()

    async def error(self, text: str, ref: str | None = None) -> None:
        metrics.rejects.labels("websocket").inc()
        await self.send_json({"type": "error", "error": text, **({"ref": ref} if ref else {})})

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=rooms.to_json(content))


class RefuseConsumer(WebsocketConsumer):
    """Any other WebSocket path: refuse the handshake (403) instead of failing in the router."""

    def connect(self) -> None:
        self.close()
