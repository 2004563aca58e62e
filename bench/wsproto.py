"""A minimal RFC 6455 WebSocket client on asyncio Protocols.

The bench's subscribers must cost far less CPU than the servers they measure: a Protocol parsing
unmasked server frames straight out of ``data_received`` is several times cheaper than a general
client library. It does what the bench needs and no more: the handshake, text/binary messages
(with continuation frames), ping/pong and close.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def handshake_request(host: str, port: int, path: str, protocol: str | None = None) -> bytes:
    """The opening handshake. ``Origin`` is the server itself: both servers check it against ALLOWED_HOSTS.
    ``protocol``: the subprotocol asked for (``mqtt`` for MQTT over WebSocket)."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n{extra}\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame from a client, masked as RFC 6455 requires."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    mask = os.urandom(4)
    if not length:
        return header + mask
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return header + mask + masked


class WsClient(asyncio.Protocol):
    """One client connection; ``on_message(payload)`` is called with each complete data message.

    ``opened`` resolves once the server answered 101 (for both servers the reader is in the room's
    group by then: they join before accepting), or fails with the refusal.
    """

    def __init__(self, request: bytes, on_message: Callable[[bytes], None]) -> None:
        self.request = request
        self.on_message = on_message
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_code: int | None = None  # the server's, from its close frame
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during the handshake: {exc}"))

    def send(self, opcode: int, payload: bytes) -> None:
        if not self.closed:
            self.transport.write(client_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode())

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionRefusedError(status.decode("latin-1")))
                self.transport.close()
                return
            self._upgraded = True
            self.opened.set_result(self)
        size, position = len(buffer), 0
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 4], "big"), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
            end = position + header + length
            if end > size:
                break
            payload = bytes(buffer[position + header : end])
            position = end
            self._frame(first, payload)
        if position:
            del buffer[:position]

    def _frame(self, first: int, payload: bytes) -> None:
        opcode, final = first & 0x0F, first & 0x80
        if opcode in (TEXT, BINARY):
            if final:
                self.on_message(payload)
            else:
                self._fragments = [payload]
        elif opcode == CONTINUATION and self._fragments is not None:
            self._fragments.append(payload)
            if final:
                message, self._fragments = b"".join(self._fragments), None
                self.on_message(message)
        elif opcode == PING:
            self.send(PONG, payload)
        elif opcode == CLOSE:
            if len(payload) >= 2:
                self.close_code = int.from_bytes(payload[:2], "big")
            self.send(CLOSE, payload[:2])
            self.transport.close()
