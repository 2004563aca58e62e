"""The adapter over a real broker with plain paho (the default) and with the opt-in ``BufferedClient``,
in both protocol versions: a burst of QoS 1 messages arrives whole, once each, in order."""

from __future__ import annotations

import asyncio
import json

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.topics import in_topic
from protocols.mqtt import MqttServer
from protocols.mqtt.client import client_from_url
from protocols.mqtt.fast_client import BufferedClient
from protocols.mqtt.server import MQTT5, MQTT311
from tests.support import Process, gateway_env, manage, migrate, stored_texts, unique, wait_until

BURST = 300


def publish_burst(url: str, topic: str, payloads: list[bytes]) -> None:
    """One connection publishing every payload at QoS 1, returned once the broker acknowledged them all."""
    client, host, port = client_from_url(url, "")
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


class Collector:
    """An ``mqtt`` application that acknowledges each message and keeps its payload."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.all_here = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        event = await receive()
        self.payloads.append(event["payload"])
        if len(self.payloads) >= BURST:
            self.all_here.set()
        await send({"type": "mqtt.ack"})


@pytest.mark.parametrize("protocol", [MQTT311, MQTT5], ids=["3.1.1", "5"])
@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
async def test_a_burst_arrives_whole_once_and_in_order(mosquitto, protocol, fast):
    topic = unique("fast") + "/in"
    collector = Collector()
    server = MqttServer(collector, mosquitto, topics=[topic], publish_group=None, protocol=protocol, fast_client=fast)
    await server.start()
    try:
        await server.wait_ready(10)
        assert type(server._client) is (BufferedClient if fast else paho.Client)
        payloads = [f"{n:05d} ".encode() + bytes(range(256)) * (n % 7) for n in range(BURST)]
        await asyncio.to_thread(publish_burst, mosquitto, topic, payloads)
        await asyncio.wait_for(collector.all_here.wait(), 20)
    finally:
        await server.stop()
    assert collector.payloads == payloads


def test_runmqtt_with_the_fast_client_setting_stores_every_reading_once(tmp_path, mosquitto):
    """``MQTT_FAST_CLIENT=true`` reaches the adapter ``runmqtt`` starts, which then stores what arrives."""
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(
        DATABASE_URL=f"sqlite:///{database}", MQTT_URL=mosquitto, MQTT_PROTOCOL="3.1.1", MQTT_FAST_CLIENT="true"
    )
    migrate(env)
    adapter = Process(manage("runmqtt"), env=env).start()
    try:
        adapter.wait_for("MQTT subscribed")
        assert "(MQTT 3.1.1, fast client, new session)" in adapter.output
        readings = [json.dumps({"sender": "fast-sensor", "message": f"r{n}"}).encode() for n in range(BURST)]
        publish_burst(mosquitto, in_topic(room), readings)
        wait_until(lambda: len(stored_texts(database, room)) >= BURST, 30, "not every reading was stored")
        assert sorted(stored_texts(database, room)) == sorted(f"r{n}" for n in range(BURST))
    finally:
        adapter.stop()


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
async def test_mqtt5_properties_reach_the_scope_with_either_client(mosquitto, fast):
    """Under MQTT 5 the fast client reads a PUBLISH without properties itself, and leaves one with them to
    paho: the scope's ``properties`` are the same either way."""
    topic = unique("props") + "/in"
    seen: list[tuple[bytes, dict]] = []
    done = asyncio.Event()

    async def application(scope, receive, send) -> None:
        event = await receive()
        seen.append((event["payload"], scope["properties"]))
        if len(seen) == 40:
            done.set()
        await send({"type": "mqtt.ack"})

    server = MqttServer(application, mosquitto, topics=[topic], publish_group=None, protocol=MQTT5, fast_client=fast)
    await server.start()
    try:
        await server.wait_ready(10)

        def publish() -> None:
            client, host, port = client_from_url(mosquitto, "", protocol=paho.MQTTv5)
            client.connect(host, port)
            client.loop_start()
            try:
                infos = []
                for n in range(40):
                    properties = None
                    if n % 2:
                        properties = Properties(PacketTypes.PUBLISH)
                        properties.UserProperty = ("id", f"r-{n}")
                    infos.append(client.publish(topic, f"m{n}".encode(), qos=1, properties=properties))
                for info in infos:
                    info.wait_for_publish(10)
            finally:
                client.disconnect()
                client.loop_stop()

        await asyncio.to_thread(publish)
        await asyncio.wait_for(done.wait(), 20)
    finally:
        await server.stop()
    assert seen == [(f"m{n}".encode(), {"UserProperty": [("id", f"r-{n}")]} if n % 2 else {}) for n in range(40)]
