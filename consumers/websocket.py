"""Browser chat over WebSocket: ``/ws/chat/<room>/``."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from django.conf import settings

from gateway import access, limits, metrics, presence, rooms

from .params import after_id
from .stream import RoomStream, stay_in_group


class ChatConsumer(AsyncWebsocketConsumer):
    """Join a room: history first (``?after=<id>`` to catch up), then live messages."""

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        if await access.averdict(self.room, await access.scope_user(self.scope)) is not access.Verdict.OK:
            return await self.close()  # the handshake is refused with 403
        self.group = rooms.group_name(self.room)
        after = after_id(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        limit = settings.HISTORY_ON_JOIN if after is None else rooms.CATCH_UP_LIMIT
        messages = await rooms.history(self.room, after=after, limit=limit)
        self.stream = RoomStream(self.room, messages[-1]["id"] if messages else (after or 0))
        await self.send_json({"type": "history", "messages": messages})
        metrics.connections.labels("websocket").inc()
        self.refresher = asyncio.get_running_loop().create_task(
            stay_in_group(self.channel_layer, self.group, self.channel_name)
        )
        name = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("name", [""])[0]
        await presence.join(self.room, self.channel_name, name)

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "group"):
            return
        if hasattr(self, "refresher"):
            self.refresher.cancel()
            metrics.connections.labels("websocket").dec()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await presence.leave(self.room, self.channel_name)

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
        if not limits.allow("WEBSOCKET", self.channel_name):
            return await self.error(f"slow down: {limits.describe('WEBSOCKET')} per connection; not posted", ref)
        try:
            await rooms.post(self.room, request["message"], sender=request.get("sender"), source="websocket")
        except rooms.InvalidMessage as exc:
            await self.error(str(exc), ref)

    async def room_message(self, event: dict) -> None:
        for _, text in await self.stream.follow(event["id"], event["text"]):
            await self.send(text_data=text)
            metrics.deliveries.labels("websocket").inc()
        metrics.fanout_seconds.observe(time.time() - event.get("at", time.time()))

    async def room_presence(self, event: dict) -> None:
        await self.send(text_data=event["text"])

    async def error(self, text: str, ref: str | None = None) -> None:
        metrics.rejects.labels("websocket").inc()
        await self.send_json({"type": "error", "error": text, **({"ref": ref} if ref else {})})

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=rooms.to_json(content))


class RefuseConsumer(WebsocketConsumer):
    """Any other WebSocket path: refuse the handshake (403) instead of failing in the router."""

    def connect(self) -> None:
        self.close()
