"""Browser chat over WebSocket: ``/ws/chat/<room>/``."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer

from fanout.outgoing import Outbox, Outgoing, frames
from gateway import access, limits, metrics, rooms, validation
from gateway.backlog import max_backlog
from gateway.daphne_io import FRAMES_EXTENSION, TOO_FAR_BEHIND
from gateway.runtime import runtime_of
from protocols.consumer import DirectDispatch

from .http import UNAVAILABLE_ERROR
from .params import after_id

logger = logging.getLogger(__name__)

DELIVERIES = metrics.deliveries.labels("websocket")


class ChatConsumer(DirectDispatch, AsyncWebsocketConsumer):
    """Join a room: history first (``?after=<id>`` to catch up), then live messages.

    Live messages come from the process's hub (one layer subscription per room per process), so the
    consumer needs no channel of its own and each delivery is a plain call, with no dispatch. Where the
    server offers it (daphne, as config.asgi sets it up), the frames, made once for all readers, are
    written to the socket at once; elsewhere they go through ``websocket.send`` in order. Either way a
    reader more than ``READER_MAX_BACKLOG`` bytes behind is closed with 1013 (docs/rooms.md, "Slow readers")."""

    channel_layer_alias = None
    groups = ()  # no layer groups (the hub is the room's subscriber): no empty list per connection

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.runtime = runtime = runtime_of(self.scope)
        if await runtime.verdicts(self.room, await access.scope_user(self.scope)) is not access.Verdict.OK:
            return await self.close()  # the handshake is refused with 403
        after = after_id(self.scope)
        await self.accept()
        writer = self.scope.get("extensions", {}).get(FRAMES_EXTENSION)
        self.write_frames = writer["write"] if writer else None
        self.outbox = None if writer else Outbox(self._send_texts, max_backlog(), self.too_far_behind)
        self.hub = runtime.hub
        self.stream = self.hub.stream(self.room, self.deliver)
        audience = await self.hub.join(self.room, self)
        self.key = f"{self.hub.channel}#{id(self):x}"  # this connection, for presence and rate limits
        metrics.connections.labels("websocket").inc()
        if after is None:  # the newest messages, as the hub keeps them: no database read
            history, start = list(audience.recent), audience.last_id
        else:
            history, start = await audience.catch_up(after)
        self.write([Outgoing(0, history_json(history, start))])
        self.stream.begin(start)
        name = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("name", [""])[0]
        self.scope = lasting_scope(self.scope)
        runtime.presence.join(self.room, self.key, name)  # written and announced in the background

    async def websocket_disconnect(self, message: dict) -> None:
        """Channels' handler without its trip to the database thread (``aclose_old_connections``) on every
        close: this consumer's database work all goes through ``database_sync_to_async``, which closes
        stale connections itself, and it has no layer groups to discard. 2,000 readers closing at once
        otherwise queue 2,000 trips in the one database thread (protocols/consumer.py)."""
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "hub"):
            return
        self.hub.leave(self.room, self)
        self.stream.close()
        if self.outbox is not None:
            self.outbox.close()
        if hasattr(self, "key"):
            metrics.connections.labels("websocket").dec()
            self.runtime.presence.leave(self.room, self.key)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return await self.error("send text frames holding JSON")
        try:
            request = validation.parse_json(text_data)
        except rooms.InvalidMessage as exc:  # too deep, or NaN
            return await self.error(str(exc))
        except ValueError:
            return await self.error('invalid JSON: send {"message": "text"}')
        if not isinstance(request, dict) or "message" not in request:
            return await self.error('send a JSON object with a "message" field')
        ref = request.get("ref")  # the client's own id for this message, echoed in an error about it
        ref = ref if isinstance(ref, str) and len(ref) <= 100 and validation.is_text(ref) else None
        if not self.runtime.limits.allow("WEBSOCKET", self.key):
            return await self.error(f"slow down: {limits.describe('WEBSOCKET')} per connection; not posted", ref)
        try:
            await self.runtime.rooms.post(
                self.room, request["message"], sender=request.get("sender"), source="websocket"
            )
        except rooms.InvalidMessage as exc:
            await self.error(str(exc), ref)
        except rooms.UNAVAILABLE as exc:  # the services are down: not posted, and the socket stays open
            logger.warning("WebSocket post to %s: services unavailable (%r)", self.room, exc)
            await self.error(f"not posted: {UNAVAILABLE_ERROR}", ref)
        except Exception:  # a failure of ours on this one message: it costs the connection nothing more
            logger.exception("WebSocket post to %s failed", self.room)
            await self.error("not posted: the server failed on this message", ref)

    def take_messages(self, items: list[Outgoing]) -> None:
        self.stream.push(items)

    def take_presence(self, item: Outgoing) -> None:
        if self.stream.begun:  # before: the history comes first
            self.write([item])

    def deliver(self, items: list[Outgoing]) -> None:
        self.write(items)
        DELIVERIES.inc(len(items))

    def write(self, items: list[Outgoing]) -> None:
        if self.write_frames is not None:
            self.write_frames(frames(items))
        else:
            self.outbox.put([item.text for item in items], sum(len(item.frame) for item in items))

    def too_far_behind(self) -> None:
        """The outbox passed ``READER_MAX_BACKLOG`` and dropped what waited: close with 1013, at once."""
        metrics.slow_readers.labels("websocket").inc()
        self.closing = asyncio.get_running_loop().create_task(self.close(code=TOO_FAR_BEHIND))

    async def _send_texts(self, texts: list[str]) -> None:
        for text in texts:
            await self.send(text_data=text)

    async def error(self, text: str, ref: str | None = None) -> None:
        metrics.rejects.labels("websocket").inc()
        await self.send_json({"type": "error", "error": text, **({"ref": ref} if ref else {})})

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=rooms.to_json(content))


def lasting_scope(scope: dict) -> dict:
    """What a joined connection keeps of its scope for hours: its type and path. The rest (headers,
    cookies, session, user, extensions, route) served the handshake and the join, and would cost every
    idle connection ~1 KB for nothing (docs/deploy.md, "Many connections per process")."""
    return {"type": scope["type"], "path": scope.get("path", "")}


def history_json(items: list[Outgoing], last_id: int) -> str:
    """``{"type": "history", "messages": [...], "last_id": N}`` from messages serialised already. ``last_id``
    is where this connection stands (live messages follow it), even with no message in the history: a
    reader who then sees none reconnects with ``after=last_id`` and misses nothing."""
    return '{"type": "history", "messages": [' + ", ".join(item.text for item in items) + f'], "last_id": {last_id}}}'


class RefuseConsumer(WebsocketConsumer):
    """Any other WebSocket path: refuse the handshake (403) instead of failing in the router."""

    def connect(self) -> None:
        self.close()
