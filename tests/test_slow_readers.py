"""A slow reader costs only itself (docs/rooms.md, "Slow readers"): a WebSocket or SSE reader that stops
reading is closed once it is ``READER_MAX_BACKLOG`` bytes behind, the server's memory stays bounded
while far more is sent to the room, readers beside it get everything, and the closed reader, reading
again, gets what it was sent in order, the close, and then the rest from the history."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
import threading

import psutil
import pytest
import websockets
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter

from consumers.routing import websocket_urlpatterns
from fanout.outgoing import Outbox
from gateway.backlog import Backlog
from gateway.runtime import WithRuntime
from tests.support import ahttp, join, launch_gateway, receive, unique
from tests.test_events import SseClient

LIMIT = 256 * 1024  # READER_MAX_BACKLOG here
TEXT = "x" * 60_000
MESSAGES = 500  # 30 MB of frames: over a hundred times the bound, far more than the kernel's socket buffers
VOLUME = MESSAGES * len(TEXT)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mosquitto):
    gateway = launch_gateway(
        tmp_path_factory.mktemp("gateway"),
        mosquitto,
        ROOM_RATE=0,
        READER_MAX_BACKLOG=LIMIT,
        MESSAGE_MAX_LENGTH=len(TEXT) + 100,
        HISTORY_ON_JOIN=5,  # what the hub keeps of the room in memory: a few messages, not the test's volume
    )
    yield gateway
    assert gateway.process.stop() == 0, gateway.process.output


# Clients that stop reading: raw sockets with a small receive window.


def stalled_socket(port: int, request: str) -> socket.socket:
    """A connection that sends ``request``, reads the response head and then nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request.encode())
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # one byte at a time: nothing after the head is taken
        assert chunk, head
        head += chunk
    assert head.startswith((b"HTTP/1.1 101", b"HTTP/1.1 200")), head
    return sock


def stalled_websocket(port: int, room: str) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    return stalled_socket(
        port,
        f"GET /ws/chat/{room}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )


def stalled_events(port: int, room: str) -> socket.socket:
    return stalled_socket(
        port, f"GET /api/rooms/{room}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    )


def read_to_end(sock: socket.socket, timeout: float = 20) -> tuple[bytes, str]:
    """Everything the server sends until it closes the connection: the data, and "eof" or "reset"."""
    data = bytearray()
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
        return bytes(data), "eof"
    except ConnectionResetError:
        return bytes(data), "reset"


def websocket_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the complete, unmasked frames in ``data``."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, at)
            at += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, at)
            at += 8
        if at + size > len(data):
            break
        frames.append((opcode, data[at : at + size]))
        at += size
    return frames


MESSAGE_ID = re.compile(rb'"type": "message", "id": (\d+)')


def message_ids(payloads: list[bytes]) -> list[int]:
    return [int(match.group(1)) for payload in payloads if (match := MESSAGE_ID.search(payload))]


# The server's side: its memory and its metrics.


class PeakRss:
    """The gateway process's largest resident size while the block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def _sample(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


async def closed_for_slowness(gateway, protocol: str) -> int:
    status, text = await ahttp("GET", f"{gateway.http}/metrics")
    assert status == 200
    match = re.search(rf'^gateway_slow_readers_closed_total{{protocol="{protocol}"}} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


async def post_all(gateway, room: str, count: int, first: int = 0) -> None:
    for start in range(first, first + count, 20):
        answers = await asyncio.gather(
            *(
                ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": f"{n} {TEXT}"})
                for n in range(start, min(start + 20, first + count))
            )
        )
        assert all(status == 201 for status, _ in answers), [body for status, body in answers if status != 201]


async def post_until_closed(gateway, room: str, protocol: str, closed_before: int) -> int:
    """Post in steps until the server has closed a reader for slowness; how many were posted."""
    posted = 0
    while await closed_for_slowness(gateway, protocol) == closed_before:
        assert posted < MESSAGES, f"{posted} messages ({posted * len(TEXT)} bytes) and no reader closed"
        await post_all(gateway, room, 10, posted)
        posted += 10
    return posted


async def websocket_round(gateway, room: str) -> int:
    """Post ``MESSAGES`` to ``room`` while a reader takes them all, in order: how much the server's RSS
    grew meanwhile."""
    reader, _ = await join(gateway, room)

    async def read_all() -> list[int]:
        return [(await receive(reader, timeout=30))["id"] for _ in range(MESSAGES)]

    try:
        with PeakRss(gateway.process.popen.pid) as rss:
            reading = asyncio.create_task(read_all())
            await post_all(gateway, room, MESSAGES)
            ids = await reading
    finally:
        await reader.close()
    assert ids == list(range(1, MESSAGES + 1))
    return rss.growth


# WebSocket


async def test_a_websocket_reader_that_never_reads_is_closed_and_the_server_holds_little(gateway):
    # What posting the messages costs the server by itself (DEBUG keeps each query's text, for one),
    # once the process has warmed up:
    await websocket_round(gateway, unique("warm-up"))
    without_stalled_reader = await websocket_round(gateway, unique("alone"))
    room = unique("stall")
    closed_before = await closed_for_slowness(gateway, "websocket")
    stalled = await asyncio.to_thread(stalled_websocket, gateway.http_port, room)
    try:
        growth = await websocket_round(gateway, room)  # the reader beside it gets everything, in order
        data, end = await asyncio.to_thread(read_to_end, stalled)  # the server closes it
    finally:
        stalled.close()
    assert await closed_for_slowness(gateway, "websocket") == closed_before + 1
    frames = websocket_frames(data)
    got = message_ids([payload for opcode, payload in frames if opcode == 1])
    assert got == list(range(1, len(got) + 1))  # what it was sent is in order, with no gap
    assert len(got) < MESSAGES
    if end == "eof" or (frames and frames[-1][0] == 8):  # it may be dropped before the close frame is read
        assert frames[-1][0] == 8 and struct.unpack("!H", frames[-1][1][:2]) == (1013,)
    # Without the bound the server would hold nearly all of the volume for the stalled reader.
    assert growth - without_stalled_reader < VOLUME / 5, (growth, without_stalled_reader, VOLUME)


async def test_a_websocket_reader_that_reads_again_gets_its_messages_then_1013_then_catches_up(gateway):
    room = unique("slow")
    closed_before = await closed_for_slowness(gateway, "websocket")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.http_port))
    sock.setblocking(False)
    slow = await websockets.connect(gateway.ws(room), sock=sock, max_queue=1, max_size=None)
    assert (await receive(slow, "history"))["messages"] == []
    posted = await post_until_closed(gateway, room, "websocket", closed_before)
    got = []
    with pytest.raises(websockets.ConnectionClosed) as closed:  # noqa: PT012 (reading until the close)
        # it reads again: within the close's 1 s
        async with asyncio.timeout(20):
            while True:
                got.append((await receive(slow))["id"])
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert got == list(range(1, len(got) + 1)) and len(got) < posted
    again, history = await join(gateway, room, f"?after={got[-1]}")  # as the page does
    await again.close()
    assert [message["id"] for message in history] == list(range(len(got) + 1, posted + 1))


# Server-Sent Events


async def events_round(gateway, room: str) -> int:
    """As ``websocket_round``, with an SSE reader."""
    reader = await asyncio.to_thread(SseClient, gateway.http_port, f"/api/rooms/{room}/events")

    async def read_all() -> list[int]:
        return [(await reader.next(timeout=30))["id"] for _ in range(MESSAGES)]

    try:
        with PeakRss(gateway.process.popen.pid) as rss:
            reading = asyncio.create_task(read_all())
            await post_all(gateway, room, MESSAGES)
            ids = await reading
    finally:
        reader.close()
    assert ids == list(range(1, MESSAGES + 1))
    return rss.growth


async def test_an_sse_reader_that_never_reads_has_its_stream_ended_and_the_server_holds_little(gateway):
    await events_round(gateway, unique("sse-warm-up"))
    without_stalled_reader = await events_round(gateway, unique("sse-alone"))
    room = unique("sse-stall")
    closed_before = await closed_for_slowness(gateway, "sse")
    stalled = await asyncio.to_thread(stalled_events, gateway.http_port, room)
    try:
        growth = await events_round(gateway, room)
        data, _ = await asyncio.to_thread(read_to_end, stalled)  # the server closes it
    finally:
        stalled.close()
    assert await closed_for_slowness(gateway, "sse") == closed_before + 1
    cursor, *got = [int(n) for n in re.findall(rb"^id: (\d+)$", data, re.M)]
    assert cursor == 0  # where the stream stood before any message (an id with no data)
    assert got == list(range(1, len(got) + 1)) and len(got) < MESSAGES
    assert growth - without_stalled_reader < VOLUME / 5, (growth, without_stalled_reader, VOLUME)


async def test_an_sse_reader_that_reads_again_gets_its_events_then_the_end_then_catches_up(gateway):
    room = unique("sse-slow")
    closed_before = await closed_for_slowness(gateway, "sse")
    stalled = await asyncio.to_thread(stalled_events, gateway.http_port, room)
    try:
        posted = await post_until_closed(gateway, room, "sse", closed_before)
        data, end = await asyncio.to_thread(read_to_end, stalled)  # reads again: within the 1 s grace
    finally:
        stalled.close()
    assert (end, data[-5:]) == ("eof", b"0\r\n\r\n")  # the chunked response ended, then the connection
    cursor, *got = [int(n) for n in re.findall(rb"^id: (\d+)$", data, re.M)]
    assert cursor == 0  # where the stream stood before any message (an id with no data)
    assert got == list(range(1, len(got) + 1)) and len(got) < posted
    again = await asyncio.to_thread(SseClient, gateway.http_port, f"/api/rooms/{room}/events", got[-1])
    try:
        assert [(await again.next())["id"] for _ in range(posted - len(got))] == list(range(len(got) + 1, posted + 1))
    finally:
        again.close()


# Without daphne: the consumer's outbox


@pytest.mark.django_db(transaction=True)
async def test_a_reader_on_a_server_without_the_frames_extension_is_closed_with_1013_once_too_far_behind(
    settings, runtime
):
    """In-process, with an ASGI ``send`` that never returns for a WebSocket message (a client that does
    not read, on a server with back-pressure): the outbox fills, and the consumer closes with 1013."""
    settings.READER_MAX_BACKLOG = 10_000
    application = WithRuntime(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), runtime)
    room = unique("plain-slow")
    incoming: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []
    changed = asyncio.Condition()

    async def send(message: dict) -> None:
        async with changed:
            sent.append(message)
            changed.notify_all()
        if message["type"] == "websocket.send":
            await asyncio.Event().wait()  # never taken

    async def until(kind: str) -> dict:
        async with asyncio.timeout(10), changed:
            await changed.wait_for(lambda: any(message["type"] == kind for message in sent))
        return next(message for message in sent if message["type"] == kind)

    scope = {"type": "websocket", "path": f"/ws/chat/{room}/", "query_string": b"", "headers": [], "subprotocols": []}
    await incoming.put({"type": "websocket.connect"})
    instance = asyncio.create_task(application(scope, incoming.get, send))
    try:
        await until("websocket.send")  # the history, which the client never takes
        for n in range(4):  # 16 KB: past the 10,000 bytes
            await runtime.rooms.post(room, f"{n} " + "y" * 3990, sender="t", source="http")
        assert await until("websocket.close") == {"type": "websocket.close", "code": 1013}
        assert [message["type"] for message in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    finally:
        await incoming.put({"type": "websocket.disconnect", "code": 1013})
        async with asyncio.timeout(10):
            await instance


# The parts


async def idle(outbox: Outbox) -> None:
    """Until the outbox's task has sent all it had and ended."""
    async with asyncio.timeout(5):
        while outbox.task is not None:
            await asyncio.sleep(0)


async def test_an_outbox_holds_at_most_its_limit_then_drops_what_waits_and_takes_nothing_more():
    sent, sending, release, overflows = [], asyncio.Event(), asyncio.Event(), []

    async def send(item: bytes) -> None:
        sending.set()
        await release.wait()  # a reader that does not read
        sent.append(item)

    outbox = Outbox(send, 100, lambda: overflows.append(outbox.queued))
    outbox.put(b"a" * 500, 500)  # taken whatever its size: nothing waits
    await asyncio.wait_for(sending.wait(), 5)  # the outbox's task took it and waits in send
    for n in range(10):
        outbox.put(bytes([n]) * 10, 10)  # 100 bytes wait: at the limit
    assert (outbox.queued, overflows) == (100, [])
    outbox.put(b"!", 1)
    assert overflows == [0] and outbox.closed and not outbox.queue  # what waited is dropped
    outbox.put(b"?", 1)
    assert overflows == [0] and not outbox.queue
    release.set()
    await idle(outbox)
    assert sent == []  # the one being sent was cancelled with the rest


async def test_an_outbox_under_its_limit_sends_everything_in_order():
    sent = []

    async def send(item: int) -> None:
        await asyncio.sleep(0)  # a real send yields
        sent.append(item)

    outbox = Outbox(send, 30, lambda: pytest.fail("overflowed"))
    for n in range(99):
        outbox.put(n, 10)
        if n % 3 == 2:  # 30 bytes wait: the most it holds
            await idle(outbox)
    assert sent == list(range(99)) and outbox.queued == 0


def test_a_backlog_counts_only_while_paused_and_overflows_once():
    overflows = []
    backlog = Backlog(100, lambda: overflows.append(True))
    assert not backlog.paused
    backlog.pauseProducing()
    assert backlog.take(60) and backlog.take(40)
    backlog.resumeProducing()  # the connection's buffer emptied: nothing is held any more
    assert (backlog.paused, backlog.held) == (False, 0)
    backlog.pauseProducing()
    assert backlog.take(100)
    assert not backlog.take(1) and not backlog.take(1)
    assert overflows == [True]
