"""How the gateway writes to daphne's sockets: at once when nothing is queued, and ready-made frames.

A room fan-out is one small write to each of many idle sockets, so the per-write bookkeeping on the
way down is most of a delivery's cost. Two changes, installed by ``config.asgi`` under daphne:

- **Write-through.** Twisted queues every ``transport.write`` and sends it when the reactor next finds
  the socket writable, which on the asyncio reactor costs two selector changes (start and stop watching
  for writability) per write. Here a write to a connection with nothing queued goes straight to
  ``send``; whatever the kernel does not take (or any error) goes through Twisted's queue as before, so
  order, back-pressure and connection loss behave as they always did.
- **Frames, made once.** Every WebSocket scope carries the extension ``gateway.websocket.frames``:
  ``{"write": write(data)}`` writes complete, unmasked RFC 6455 frames to the connection as they are.
  A message for a thousand readers is framed once, not a thousand times (autobahn frames each send
  anew, and formats a debug line for each whether or not it is logged), and skips ``websocket.send``'s
  route through Channels' session wrapper and daphne's reply handling. Writes to a connection that is
  not open (still opening, closing, closed) are dropped, as daphne drops sends to a closed one. daphne
  never negotiates permessage-deflate, so a frame written here is always one the client can read.
- **A bound on each reader's backlog** (``gateway/backlog.py``). The frames writer counts what it writes
  while the connection's buffer is full; past ``READER_MAX_BACKLOG`` bytes it closes the connection with
  **1013** (try again later) and writes nothing more. Every HTTP scope carries ``gateway.http.backlog``:
  ``{"watch": watch(limit, overflow)}`` gives a streamed response (Server-Sent Events) the same count.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from gateway import backlog, metrics

FRAMES_EXTENSION = "gateway.websocket.frames"
BACKLOG_EXTENSION = "gateway.http.backlog"
TOO_FAR_BEHIND = 1013  # "try again later": the client reconnects with the last id it saw and catches up

_installed = False


def install() -> None:
    """Patch ``twisted.internet.tcp.Connection.write`` (plain TCP; TLS keeps its own path) and daphne's
    ``Server.create_application`` (to offer the frames and backlog extensions). Idempotent."""
    global _installed
    if _installed:
        return
    from daphne.server import Server
    from twisted.internet import tcp

    queued_write = tcp.Connection.write

    def write(self: Any, data: bytes) -> None:
        if (
            data
            and isinstance(data, bytes)
            and not self.TLS
            and self.connected
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
        ):  # (a producer, such as the HTTP channel every connection starts as, is paused only by a queue)
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent >= 0:
                if sent == len(data):
                    return
                data = data[sent:]
            # an error: queued, so that Twisted's own write finds it and closes the connection
        queued_write(self, data)

    create_application = Server.create_application

    def create_application_with_frames(self: Server, protocol: Any, scope: dict) -> Any:
        if scope.get("type") == "websocket":
            scope["extensions"] = {**scope.get("extensions", {}), FRAMES_EXTENSION: {"write": frame_writer(protocol)}}
        elif scope.get("type") == "http":
            watch = backlog.response_watcher(protocol)
            scope["extensions"] = {**scope.get("extensions", {}), BACKLOG_EXTENSION: {"watch": watch}}
        return create_application(self, protocol, scope)

    tcp.Connection.write = write
    Server.create_application = create_application_with_frames
    _installed = True


def frame_writer(protocol: Any) -> Callable[[bytes], None]:
    """``write(data)`` for one of daphne's WebSocket protocols (autobahn's ``WebSocketServerProtocol``),
    with what it may hold bounded (``gateway/backlog.py``)."""
    is_open = protocol.STATE_OPEN
    held = backlog.watch_connection(protocol.transport, backlog.max_backlog(), partial(close_too_far_behind, protocol))

    def write(data: bytes) -> None:
        if protocol.state != is_open:
            return
        if held.paused and not held.take(len(data)):
            return  # closed: the client catches up from the history
        if protocol.send_queue:  # autobahn's own queue (chopped or synchronous sends): keep the order
            protocol.sendData(data)
        else:
            protocol.transport.write(data)

    return write


def close_too_far_behind(protocol: Any) -> None:
    """Queue a close frame (1013) after what the reader has not taken yet. autobahn drops the connection,
    and what it holds, when the client has not answered it within its close handshake timeout (1 s)."""
    metrics.slow_readers.labels("websocket").inc()
    protocol.sendCloseFrame(code=TOO_FAR_BEHIND, reasonUtf8=b"too far behind: reconnect and catch up")
