"""MQTT 5 end to end: ``rungateway`` with no broker at MQTT_URL embeds Mosquitto (MQTT 5 and 3.1.1),
its adapter speaks MQTT 5 to it, and an MQTT 5 device posts into a room (its user property ``id``
deduplicates like a payload id). With amqtt embedded (3.1.1 only) the adapter falls back to 3.1.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.broker import start_embedded_broker
from gateway.topics import in_topic, out_topic
from protocols.mqtt import MqttServer
from tests.support import (
    MqttListener,
    apublish,
    free_port,
    history,
    join,
    launch_gateway,
    mqtt_address,
    receive,
    unique,
)


def publish_v5(url: str, topic: str, payloads: list[tuple[str, str | None]]) -> None:
    """Publish QoS 1 messages as an MQTT 5 client, each with a user property ``id`` when given one."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("v5"), protocol=paho.MQTTv5)
    connected: list = []
    client.on_connect = lambda client, userdata, flags, reason_code, properties: connected.append(reason_code)
    client.connect(*mqtt_address(url))
    client.loop_start()
    try:
        for payload, message_id in payloads:
            properties = Properties(PacketTypes.PUBLISH)
            if message_id is not None:
                properties.UserProperty = ("id", message_id)
            client.publish(topic, payload, 1, properties=properties).wait_for_publish(10)
        assert [code.value for code in connected] == [0], connected  # accepted as MQTT 5
    finally:
        client.disconnect()
        client.loop_stop()


async def test_an_mqtt5_device_posts_through_the_broker_make_run_starts(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there: rungateway embeds a broker
    gateway = launch_gateway(tmp_path, url)
    process = gateway.process
    try:
        [banner] = [line for line in process.lines if line.startswith("  MQTT ")]
        assert "embedded Mosquitto broker, MQTT 5 and 3.1.1" in banner, banner
        process.wait_for("(MQTT 5, ")  # the adapter's own connection is MQTT 5

        room = unique()
        ws, _ = await join(gateway, room)
        listener = MqttListener(url, out_topic(room))
        try:
            reading = json.dumps({"sender": "probe-5", "message": "hello over MQTT 5"})
            # Sent twice with one id (a device's retry): stored once. Then one without an id.
            await asyncio.to_thread(
                publish_v5, url, in_topic(room), [(reading, "r-1"), (reading, "r-1"), ("plain text", None)]
            )
            await apublish(url, in_topic(room), "and one over MQTT 3.1.1")  # the same broker takes both
            events = [await receive(ws) for _ in range(3)]
            published = listener.wait(3)
        finally:
            listener.close()
        assert [(event["message"], event["sender"]) for event in events] == [
            ("hello over MQTT 5", "probe-5"),
            ("plain text", "device"),
            ("and one over MQTT 3.1.1", "device"),
        ]
        assert [json.loads(message.payload) for message in published] == events
        assert await history(gateway, room) == events  # the retry with id r-1 was not stored again
        await ws.close()
    finally:
        code = process.stop()
    assert code == 0, process.output


async def test_make_run_without_mosquitto_embeds_amqtt_and_speaks_311(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"
    gateway = launch_gateway(tmp_path, url, MQTT_EMBEDDED_BROKER="amqtt")
    process = gateway.process
    try:
        [banner] = [line for line in process.lines if line.startswith("  MQTT ")]
        assert "embedded amqtt broker, MQTT 3.1.1 only" in banner, banner
        process.wait_for("(MQTT 3.1.1, ")  # at once: it knows amqtt speaks only that
        room = unique()
        ws, _ = await join(gateway, room)
        await apublish(url, in_topic(room), "over MQTT 3.1.1")
        assert (await receive(ws))["message"] == "over MQTT 3.1.1"
        await ws.close()
    finally:
        code = process.stop()
    assert code == 0, process.output


@pytest.mark.django_db(transaction=True)  # the embedded amqtt's plugins ask the database who may connect
async def test_the_adapter_falls_back_to_311_when_the_broker_cannot_read_mqtt5():
    """amqtt never answers an MQTT 5 CONNECT (it waits for bytes that do not come): no CONNACK within
    ``connect_timeout`` from a broker that never accepted MQTT 5, and the adapter speaks 3.1.1."""
    port = free_port()
    broker = await start_embedded_broker(f"mqtt://127.0.0.1:{port}", "amqtt")
    served: asyncio.Queue[bytes] = asyncio.Queue()

    async def application(scope, receive, send):
        await served.put((await receive())["payload"])
        await send({"type": "mqtt.ack"})

    topic = f"probe/{unique()}"
    server = MqttServer(application, f"mqtt://127.0.0.1:{port}", topics=[topic], publish_group=None, connect_timeout=2)
    try:
        await server.start()
        await server.wait_ready(30)
        assert server.protocol_name == "MQTT 3.1.1"
        await apublish(f"mqtt://127.0.0.1:{port}", topic, b"after the fallback")
        assert await asyncio.wait_for(served.get(), 30) == b"after the fallback"
    finally:
        await server.stop()
        await broker.shutdown()


def test_the_embedded_mosquitto_ends_with_a_killed_gateway(tmp_path):
    port = free_port()
    gateway = launch_gateway(tmp_path, f"mqtt://127.0.0.1:{port}")
    assert "embedded Mosquitto broker" in gateway.process.output
    gateway.process.kill()  # SIGKILL: no clean stop
    deadline = time.monotonic() + 10
    while True:  # the broker's port is free again (or the next make run would find it and use it)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "the embedded Mosquitto outlived the killed gateway"
        time.sleep(0.05)  # polling the port, with a deadline
