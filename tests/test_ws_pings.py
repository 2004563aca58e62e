"""The gateway's daphne pings each WebSocket at a moment of its own (gateway/server.py,
``SpreadPingsProtocol``): connections opened together are not all pinged in the same one of daphne's
looks (every 2 s), where 1,000 pings and their pongs held the event loop ~30 ms in every room."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import pytest

from tests.support import PYTHON, Process, prepare_gateway, unique, wait_for_port

PING_INTERVAL = 6  # seconds: three of daphne's looks
SOCKETS = 90
LOOK_APART = 1.0  # pings sent in one look arrive within milliseconds; looks are 2 s apart


@pytest.fixture(scope="module")
def server(tmp_path_factory, mosquitto):
    gateway = prepare_gateway(tmp_path_factory.mktemp("pings"), mosquitto, MAX_PENDING_HANDSHAKES=SOCKETS)
    argv = [PYTHON, "-m", "gateway.serve", "-b", "127.0.0.1", "-p", str(gateway.http_port)]
    argv += ["--ping-interval", str(PING_INTERVAL), "--ping-timeout", "60", "config.asgi:application"]
    gateway.process = Process(argv, env=gateway.env).start()
    wait_for_port(gateway.http_port, alive=lambda: gateway.process.popen.poll() is None, timeout=30)
    yield gateway
    assert gateway.process.stop() == 0, gateway.process.output


async def open_socket(port: int, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket that only reads (a client's own frames would put its next ping off)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/chat/{room}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return reader, writer


async def first_ping(reader: asyncio.StreamReader) -> float:
    """When the server's first ping frame arrived (its other frames, unmasked, are skipped)."""
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length >= 126:
            length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8), "big")
        await reader.readexactly(length)
        if first & 0x0F == 0x9:
            return time.monotonic()


def looks(moments: list[float]) -> list[int]:
    """How many pings each of daphne's looks sent, from when they arrived."""
    counts: list[int] = []
    last = None
    for moment in sorted(moments):
        if last is None or moment - last > LOOK_APART:
            counts.append(0)
        counts[-1] += 1
        last = moment
    return counts


async def test_sockets_opened_together_are_pinged_in_different_looks(server):
    room = unique("pings")
    sockets = await asyncio.gather(*(open_socket(server.http_port, room) for _ in range(SOCKETS)))
    try:
        moments = await asyncio.wait_for(
            asyncio.gather(*(first_ping(reader) for reader, _ in sockets)), PING_INTERVAL + 10
        )
    finally:
        for _, writer in sockets:
            writer.close()
    counts = looks(moments)
    # Opened within a moment, they would all be due in one look (or two, if a look fell among the
    # openings); spread over the interval, each of its three looks pings about a third of them.
    assert sum(counts) == SOCKETS
    assert len(counts) >= 3, counts
    assert max(counts) < SOCKETS / 2, counts
