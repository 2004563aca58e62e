"""Frames made once for every reader, and readers served by a server without the frames extension."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from websockets.frames import OP_TEXT, Frame
from websockets.streams import StreamReader

from consumers.routing import websocket_urlpatterns
from fanout.outgoing import Outgoing, frames, text_frame
from gateway.runtime import WithRuntime
from tests.support import unique


def parse(data: bytes) -> list[Frame]:
    """Frames as the websockets library reads them from a server (unmasked, no extensions)."""
    reader = StreamReader()
    reader.feed_data(data)
    parsed = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:  # the data is all there: the parser never waits for more
                next(parser)
        except StopIteration as done:
            parsed.append(done.value)
    return parsed


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frames_of_every_length_encoding_parse(size):
    text = "é" * (size // 2) + "x" * (size % 2)  # two bytes a character: lengths around each boundary
    [frame] = parse(text_frame(text))
    assert (frame.opcode, frame.fin, frame.rsv1) == (OP_TEXT, True, False)
    assert frame.data.decode() == text


def test_a_batch_is_its_frames_back_to_back_and_each_frame_is_made_once():
    items = [Outgoing(n, f"message {n}") for n in range(1, 4)]
    assert [frame.data.decode() for frame in parse(frames(items))] == ["message 1", "message 2", "message 3"]
    assert items[0].frame is items[0].frame
    assert frames(items[:1]) is items[0].frame


@pytest.mark.django_db(transaction=True)
async def test_readers_on_a_server_without_the_frames_extension_get_every_message_in_order(runtime):
    """In-process (no daphne): deliveries go through ``websocket.send`` via each reader's outbox."""
    application = WithRuntime(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), runtime)
    room = unique("plain")
    readers = []
    for _ in range(2):
        reader = WebsocketCommunicator(application, f"/ws/chat/{room}/")
        connected, _ = await reader.connect()
        assert connected
        assert (await reader.receive_json_from(5))["type"] == "history"
        readers.append(reader)
    posted = [(await runtime.rooms.post(room, f"m{n}", sender="t", source="http"))["id"] for n in range(30)]
    try:
        for reader in readers:
            got = []
            async with asyncio.timeout(10):
                while len(got) < len(posted):
                    event = json.loads(await reader.receive_from(10))
                    if event["type"] == "message":
                        got.append(event["id"])
            assert got == posted
    finally:
        for reader in readers:
            await reader.disconnect()
