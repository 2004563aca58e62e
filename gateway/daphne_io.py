"""How the gateway writes to daphne's sockets: ready-made frames, and a bound on each reader's backlog.

A room fan-out is one small write to each of many idle sockets, so the per-write bookkeeping on the
way down is most of a delivery's cost. Two scope extensions, offered by ``gateway.server.GatewayServer``
(a plain ``daphne`` offers neither, and the consumers fall back to ``websocket.send`` and an unbounded
stream). The write-through that once patched Twisted is ``gateway/write_through.py``, opt-in.

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
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

from gateway import backlog, metrics

FRAMES_EXTENSION = "gateway.websocket.frames"
BACKLOG_EXTENSION = "gateway.http.backlog"
OPEN = WebSocketProtocol.STATE_OPEN  # autobahn's state of an open connection
TOO_FAR_BEHIND = 1013  # "try again later": the client reconnects with the last id it saw and catches up


def scope_extensions(protocol: Any, scope: dict) -> dict:
    """The scope's ``extensions`` with the gateway's own added: frames for a WebSocket, the backlog
    watch for HTTP. Called by ``gateway.server.GatewayServer`` for each connection it serves."""
    extensions = dict(scope.get("extensions") or {})
    if scope.get("type") == "websocket":
        extensions[FRAMES_EXTENSION] = {"write": frame_writer(protocol)}
    elif scope.get("type") == "http":
        extensions[BACKLOG_EXTENSION] = {"watch": backlog.response_watcher(protocol)}
    return extensions


def frame_writer(protocol: Any) -> Callable[[bytes], None]:
    """``write(data)`` for one of daphne's WebSocket protocols (autobahn's ``WebSocketServerProtocol``),
    with what it may hold bounded (``gateway/backlog.py``)."""
    return FrameWriter(protocol)


class FrameWriter:
    """``write(data)`` of one connection, as an object of two slots rather than a closure (a function,
    its cells and a partial): it is held for the connection's life."""

    __slots__ = ("protocol", "held")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.held = backlog.watch_connection(protocol.transport, backlog.max_backlog(), self.too_far_behind)

    def __call__(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol.state != OPEN:
            return
        if self.held.paused and not self.held.take(len(data)):
            return  # closed: the client catches up from the history
        if protocol.send_queue:  # autobahn's own queue (chopped or synchronous sends): keep the order
            protocol.sendData(data)
        else:
            protocol.transport.write(data)

    def too_far_behind(self) -> None:
        close_too_far_behind(self.protocol)


def close_too_far_behind(protocol: Any) -> None:
    """Queue a close frame (1013) after what the reader has not taken yet. autobahn drops the connection,
    and what it holds, when the client has not answered it within its close handshake timeout (1 s)."""
    metrics.slow_readers.labels("websocket").inc()
    protocol.sendCloseFrame(code=TOO_FAR_BEHIND, reasonUtf8=b"too far behind: reconnect and catch up")
