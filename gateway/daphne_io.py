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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FRAMES_EXTENSION = "gateway.websocket.frames"

_installed = False


def install() -> None:
    """Patch ``twisted.internet.tcp.Connection.write`` (plain TCP; TLS keeps its own path) and daphne's
    ``Server.create_application`` (to offer the frames extension). Idempotent."""
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
        return create_application(self, protocol, scope)

    tcp.Connection.write = write
    Server.create_application = create_application_with_frames
    _installed = True


def frame_writer(protocol: Any) -> Callable[[bytes], None]:
    """``write(data)`` for one of daphne's WebSocket protocols (autobahn's ``WebSocketServerProtocol``)."""
    is_open = protocol.STATE_OPEN

    def write(data: bytes) -> None:
        if protocol.state != is_open:
            return
        if protocol.send_queue:  # autobahn's own queue (chopped or synchronous sends): keep the order
            protocol.sendData(data)
        else:
            protocol.transport.write(data)

    return write
