"""Room fan-out in one process: every reader gets every message once, in order, whatever the others do."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets

from tests.support import ahttp, join, launch_gateway, receive, unique

MESSAGES = 1600
TEXT = "x" * 3900  # 1600 of them: 6 MB, more than a stalled reader's socket buffers take (4 MB at most)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mosquitto):
    # A stalled reader here is let fall 16 MiB behind (READER_MAX_BACKLOG), more than these tests send:
    # tests/test_slow_readers.py is about what happens past it.
    gateway = launch_gateway(
        tmp_path_factory.mktemp("gateway"), mosquitto, ROOM_RATE=0, READER_MAX_BACKLOG=16 * 1024 * 1024
    )
    yield gateway
    assert gateway.process.stop() == 0, gateway.process.output


async def test_a_stalled_reader_gets_everything_in_order_and_holds_back_no_one(gateway):
    """A reader that stops reading fills its socket: sends to it go partly through the kernel, partly
    through the server's queue (gateway/daphne_io.py); a reader beside it must not wait for it."""
    room = unique("fan")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's sends fill up
    sock.connect(("127.0.0.1", gateway.http_port))
    sock.setblocking(False)
    stalled = await websockets.connect(gateway.ws(room), sock=sock, max_queue=1, max_size=None)
    assert json.loads(await stalled.recv())["type"] == "history"
    readers = [(await join(gateway, room))[0] for _ in range(3)]
    for start in range(0, MESSAGES, 50):
        answers = await asyncio.gather(
            *(
                ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": f"{n} {TEXT}"})
                for n in range(start, start + 50)
            )
        )
        assert all(status == 201 for status, _ in answers), answers
    try:
        for reader in readers:  # each got all of them while the stalled one read nothing
            ids = [(await receive(reader))["id"] for _ in range(MESSAGES)]
            assert ids == list(range(1, MESSAGES + 1))
        seen = []
        async with asyncio.timeout(30):
            while len(seen) < MESSAGES:
                event = json.loads(await stalled.recv())
                if event["type"] == "message":
                    assert event["message"].endswith(TEXT)
                    seen.append(event["id"])
        assert seen == list(range(1, MESSAGES + 1))
    finally:
        await stalled.close()
        for reader in readers:
            await reader.close()


async def test_posts_from_many_requests_at_once_are_all_stored(gateway):
    """Requests end while the room's writer goes on storing later ones' posts in later batches."""
    room = unique("busy")

    async def poster(n: int) -> list[int]:
        ids = []
        for k in range(20):
            status, body = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": f"{n}.{k}"})
            assert status == 201, body
            ids.append(body["id"])
        return ids

    stored = sum(await asyncio.gather(*(poster(n) for n in range(20))), [])
    assert sorted(stored) == list(range(1, 401))


async def test_readers_joining_and_catching_up_near_and_far_get_everything_once(gateway):
    """The hub keeps a room's newest messages (HISTORY_ON_JOIN, 50): a join, and a catch-up that far
    back, is served from them; a catch-up further back reads the history. Each gets every message once."""
    room = unique("keep")
    early, _ = await join(gateway, room)  # the room's audience in this process exists from here on
    for n in range(1, 121):
        assert (await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": f"m{n}"}))[0] == 201
    assert [(await receive(early))["id"] for _ in range(120)] == list(range(1, 121))
    joined, newest = await join(gateway, room)
    near, near_history = await join(gateway, room, "?after=100")
    far, far_history = await join(gateway, room, "?after=10")
    assert [m["id"] for m in newest] == list(range(71, 121))
    assert [m["id"] for m in near_history] == list(range(101, 121))
    assert [m["id"] for m in far_history] == list(range(11, 121))
    assert (await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "m121"}))[0] == 201
    for ws in (early, joined, near, far):
        assert (await receive(ws))["id"] == 121
        await ws.close()


async def test_the_history_says_where_the_reader_stands_even_when_it_holds_nothing(gateway):
    """``last_id``: live messages follow it. A reader who joined an empty room and then saw nothing (its
    connection lost before the first message reached it) reconnects with ``after=last_id`` and gets every
    message, not only the newest ``HISTORY_ON_JOIN``."""
    room = unique("stands")
    empty = await websockets.connect(gateway.ws(room), open_timeout=10)
    history = await receive(empty, "history")
    assert history["messages"] == [] and history["last_id"] == 0
    await empty.close()
    url = f"{gateway.http}/api/rooms/{room}/messages"
    posted = [(await ahttp("POST", url, {"message": f"m{n}"}))[1] for n in range(60)]
    back = await websockets.connect(gateway.ws(room, f"?after={history['last_id']}"), open_timeout=10)
    caught_up = await receive(back, "history")
    assert [m["id"] for m in caught_up["messages"]] == [m["id"] for m in posted]  # all 60, not the newest 50
    assert caught_up["last_id"] == posted[-1]["id"]
    newcomer = await websockets.connect(gateway.ws(room), open_timeout=10)
    assert (await receive(newcomer, "history"))["last_id"] == posted[-1]["id"]
    ahead = await websockets.connect(gateway.ws(room, f"?after={posted[-1]['id']}"), open_timeout=10)
    assert await receive(ahead, "history") == {"type": "history", "messages": [], "last_id": posted[-1]["id"]}
    for ws in (back, newcomer, ahead):
        await ws.close()


async def test_readers_joining_a_new_room_at_once_all_hear_it(gateway):
    """The first reader of a room in a process opens it (joins the group, reads where the room stands);
    those who come meanwhile wait for that one opening."""
    room = unique("crowd")
    readers = await asyncio.gather(*(join(gateway, room) for _ in range(20)))
    assert all(history == [] for _, history in readers)
    assert (await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "hello all"}))[0] == 201
    for ws, _ in readers:
        assert (await receive(ws))["message"] == "hello all"
        await ws.close()
