"""The second peer: Mosquitto's own WebSocket listener, a C broker doing room fan-out to WebSocket readers.

The same room fan-out as the gateway's, against a broker built with WebSockets (``bench/mosquitto_ws.py``):
``subscribers`` readers speak MQTT 3.1.1 over WebSocket (subprotocol ``mqtt``: CONNECT, SUBSCRIBE QoS 0
to ``rooms/<room>/out``, ``bench/mqttpackets.py``), and the publisher publishes bench messages to that
topic (QoS 1, paho over TCP). The same staircase, checks and windows as the gateway's fan-out; then
the handshakes scenario's measure on a fresh broker: CPU per handshake (WebSocket upgrade, CONNECT,
SUBSCRIBE, until SUBACK) and handshakes a second.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import handshakes, mosquitto_ws, servers
from .clients import bench_text
from .publishers import MQTT, MqttPublisher
from .scenarios import FANOUT_ROOM, Ingress, Run, Target, fanout

logger = logging.getLogger("bench")
PATH = "/mqtt"


def topic(room: str) -> str:
    return f"rooms/{room}/out"


class MosquittoIngress(Ingress):
    """Bench messages published to the room's topic, QoS 1 (accepted: the broker's PUBACK)."""

    def __init__(self, url: str, room: str) -> None:
        super().__init__()
        self.mqtt, self.topic = MqttPublisher(url), topic(room)

    def publisher(self, sequence: int) -> int:
        return MQTT

    async def send(self, sequence: int) -> None:
        self.mqtt.publish(self.topic, bench_text(MQTT, sequence))

    async def flush(self, timeout: float) -> None:
        acked = await asyncio.to_thread(self.mqtt.wait_acked, timeout)
        if acked < self.mqtt.published:
            self.errors.append(f"the broker acknowledged {acked} of {self.mqtt.published} MQTT messages")

    def close(self) -> None:
        self.mqtt.close()


def start(run: Run, binary: Any) -> tuple[int, int, servers.ServerProcess]:
    return servers.start_mosquitto_ws(binary, run.cleanup, run.log_dir)


async def mqttws(run: Run) -> dict[str, Any]:
    try:
        binary = await asyncio.to_thread(mosquitto_ws.binary)
    except mosquitto_ws.Unavailable as exc:
        raise RuntimeError(f"no Mosquitto with WebSockets: {exc}") from exc
    result: dict[str, Any] = {}
    ws_port, tcp_port, process = start(run, binary)
    try:
        target = Target("mosquitto-ws", [ws_port], {process.name: process.pid}, path=PATH, topic=topic(FANOUT_ROOM))
        ingress = MosquittoIngress(f"mqtt://127.0.0.1:{tcp_port}", FANOUT_ROOM)
        result["fanout"] = await fanout(run, target, ingress, FANOUT_ROOM)
    finally:
        process.stop()
    ws_port, _, process = start(run, binary)  # a fresh one, as for every handshakes target
    try:
        paths = [
            ("127.0.0.1", ws_port, PATH, topic(f"{handshakes.HANDSHAKE_PREFIX}{n // run.sizes.handshake_room_size}"))
            for n in range(run.sizes.handshakes)
        ]
        rounds = [
            await handshakes.measure_round(run, "mosquitto-ws", process.pid, paths)
            for _ in range(run.sizes.handshake_rounds)
        ]
        result["handshakes"] = {**min(rounds, key=lambda r: r["cpu_ms_per_handshake"]), "rounds": rounds}
    finally:
        process.stop()
    return result
