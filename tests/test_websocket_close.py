"""A client that sends messages and then closes cleanly has every one of them processed."""

from __future__ import annotations

import json
import time

import websockets

from tests.support import history, unique


async def test_messages_sent_just_before_a_clean_close_are_all_stored(gateway):
    room = unique("close")
    texts = [f"sent before closing {n}" for n in range(40)]  # within the connection's burst allowance
    async with websockets.connect(gateway.ws(room), open_timeout=10) as ws:
        assert json.loads(await ws.recv())["type"] == "history"
        for text in texts:
            await ws.send(json.dumps({"message": text}))
    # Closed cleanly at once, without waiting for any answer: each is processed all the same.
    deadline = time.monotonic() + 10
    while len(stored := [m["message"] for m in await history(gateway, room)]) < len(texts):
        assert time.monotonic() < deadline, stored
    assert stored == texts
