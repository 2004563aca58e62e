"""The MQTT adapter survives a broker restart: /healthz says so meanwhile, then it resubscribes by itself."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.topics import in_topic, out_topic
from tests.support import (
    Gateway,
    Mosquitto,
    MqttListener,
    ahttp,
    apublish,
    history,
    join,
    launch_gateway,
    receive,
    unique,
)


@pytest.fixture
def broker(mosquitto):  # a broker of this test's own, to kill and restart
    broker = Mosquitto().start()
    yield broker
    broker.kill()


async def health_when(gateway: Gateway, status: int, timeout: float = 30) -> dict:
    """Poll /healthz, with a deadline, until it answers ``status``; its body."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = await ahttp("GET", f"{gateway.http}/healthz")
        if code == status:
            return body
        assert time.monotonic() < deadline, f"/healthz still {code} after {timeout}s: {body}"
        await asyncio.sleep(0.05)  # a deadline-bounded poll of an HTTP status, not synchronisation by time


async def test_adapter_reconnects_and_resubscribes_after_broker_restart(tmp_path, broker):
    gateway = launch_gateway(tmp_path, broker.url)
    process = gateway.process
    try:
        process.wait_for("Quit with Ctrl-C.")  # the whole banner is out
        assert "embedded" not in process.output  # a broker answered: no embedded one
        status, body = await ahttp("GET", f"{gateway.http}/healthz")
        assert status == 200 and body["components"]["mqtt"]["ok"] is True, body

        room = unique()
        ws, _ = await join(gateway, room)
        await apublish(broker.url, in_topic(room), "before the restart")
        event = await receive(ws)
        assert (event["message"], event["source"]) == ("before the restart", "mqtt")

        broker.kill()
        body = await health_when(gateway, 503)
        assert body["status"] == "degraded"
        assert body["components"]["mqtt"] == {"ok": False, "detail": "disconnected"}
        assert all(state["ok"] for name, state in body["components"].items() if name != "mqtt"), body
        process.wait_for("MQTT connection to")  # the adapter noticed and logs that it reconnects

        broker.start()  # the same port again
        process.wait_for("MQTT subscribed", count=2)
        status, body = await ahttp("GET", f"{gateway.http}/healthz")
        assert status == 200 and body["status"] == "ok", body

        # In and out both work on the new connection.
        listener = MqttListener(broker.url, out_topic(room))
        try:
            await apublish(broker.url, in_topic(room), json.dumps({"message": "after the restart", "sender": "d"}))
            event = await receive(ws)
            assert (event["message"], event["source"], event["sender"]) == ("after the restart", "mqtt", "d")
            status, posted = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "out"})
            assert status == 201, posted
            published = [json.loads(m.payload) for m in listener.wait(2)]
        finally:
            listener.close()
        stored = await history(gateway, room)
        assert [m["message"] for m in stored] == ["before the restart", "after the restart", "out"]
        assert [m["id"] for m in stored] == sorted({m["id"] for m in stored})
        assert published == stored[1:]
        await ws.close()
    finally:
        code = process.stop()
    assert code == 0, process.output
