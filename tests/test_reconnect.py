"""The MQTT adapter survives a broker restart: /healthz says so meanwhile, then it resubscribes by itself."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.support import (
    Gateway,
    ahttp,
    apublish,
    free_port,
    history,
    join,
    launch_gateway,
    receive,
    unique,
)


class Broker:
    """A throwaway Mosquitto on a port of its own, so restarting it troubles nobody."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


async def wait_for_health(gateway: Gateway, status: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await ahttp("GET", f"{gateway.http}/healthz")
        if code == status:
            return body
        assert time.monotonic() < deadline, f"/healthz still {code}: {body}"
        await asyncio.sleep(0.1)  # polling with a deadline


@pytest.fixture
def broker(mosquitto):  # needs the mosquitto binary the machine's broker comes from
    broker = Broker(free_port())
    broker.start()
    yield broker
    broker.kill()


async def test_adapter_reconnects_and_resubscribes_after_broker_restart(tmp_path, broker):
    gateway = launch_gateway(tmp_path, f"mqtt://127.0.0.1:{broker.port}")
    process = gateway.process
    try:
        assert "embedded" not in process.output
        room = unique()
        ws, _ = await join(gateway, room)
        await apublish(gateway.mqtt_url, f"rooms/{room}/in", "before the restart")
        assert (await receive(ws))["message"] == "before the restart"

        broker.kill()
        body = await wait_for_health(gateway, 503)
        assert body["status"] == "degraded" and body["components"]["mqtt"]["ok"] is False
        assert body["components"]["database"]["ok"] is True

        broker.start()
        process.wait_for("MQTT subscribed", count=2)
        await wait_for_health(gateway, 200)
        await apublish(gateway.mqtt_url, f"rooms/{room}/in", "after the restart")
        assert (await receive(ws))["message"] == "after the restart"
        assert [m["message"] for m in await history(gateway, room)] == ["before the restart", "after the restart"]
        await ws.close()
    finally:
        assert process.stop() == 0, process.output


async def test_embedded_broker_when_none_answers(tmp_path):
    gateway = launch_gateway(tmp_path, f"mqtt://127.0.0.1:{free_port()}")
    process = gateway.process
    try:
        assert "(embedded amqtt broker)" in process.output
        room = unique()
        ws, _ = await join(gateway, room)
        await apublish(gateway.mqtt_url, f"rooms/{room}/in", "through the embedded broker")
        assert (await receive(ws))["message"] == "through the embedded broker"
        await ws.close()
    finally:
        assert process.stop() == 0, process.output
