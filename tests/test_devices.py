"""MQTT devices: Django objects with credentials and rooms, enforced by Mosquitto (from generated
password and ACL files) and by the embedded broker; the adapter refuses rooms that take no MQTT.

A device publishes only to the topic that names it, ``rooms/<room>/in/<device>``: that name, not what
its payload claims, is its sender and the key of its rate."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import (
    ROOT,
    MqttListener,
    ahttp,
    apublish,
    free_port,
    history,
    join,
    manage,
    mqtt_address,
    mqtt_client,
    prepare_gateway,
    receive,
    start_gateway,
    unique,
    wait_for_port,
)

SETUP = """
from gateway.models import Device, Room
plant = Room.objects.create(name="plant", public=True)
Room.objects.create(name="quiet", public=True)
open_air = Room.objects.create(name="open-air", public=True, mqtt_open=True)
device = Device(name="sensor-7"); device.set_password("pw-sensor"); device.save(); device.rooms.add(plant)
device = Device(name="sensor-9"); device.set_password("pw-9"); device.save(); device.rooms.add(plant)
device = Device(name="meter-1"); device.set_password("pw-m"); device.save(); device.rooms.add(open_air)
"""
RATE = "0.2"  # DEVICE_RATE of these gateways: bursts of 2 (RATE_BURST_SECONDS 10), then one every 5 s


def publish_burst(url: str, topic: str, payloads: list[str]) -> None:
    """One connection publishing every payload at QoS 0 (dropped when over the rate), back to back."""
    client = mqtt_client(url, "burst")
    client.connect(*mqtt_address(url))
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=0) for payload in payloads]:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def connect_rc(port: int, username: str, password: str) -> int:
    """The broker's CONNACK verdict for these credentials (0: accepted)."""
    verdicts = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("probe"))
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, reason, p: verdicts.append(reason.value)
    client.connect("127.0.0.1", port)
    while not verdicts:
        client.loop(timeout=1)
    client.disconnect()
    return verdicts[0]


@pytest.fixture(scope="module")
def secured(tmp_path_factory, mosquitto):  # mosquitto: the machine has the binary
    """A gateway with closed rooms behind a Mosquitto that knows only the generated accounts."""
    directory = tmp_path_factory.mktemp("secured")
    port = free_port()
    gateway = prepare_gateway(
        directory,
        f"mqtt://gateway:gw-secret@127.0.0.1:{port}",
        ROOMS_OPEN="false",
        ROOMS_AUTO_CREATE="false",
        DEVICE_RATE=RATE,
    )
    subprocess.run(manage("shell", "-c", SETUP), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    passwords, acl, config = directory / "passwords", directory / "acl", directory / "mosquitto.conf"
    command = manage("mosquittofiles", "--passwords", str(passwords), "--acl", str(acl))
    subprocess.run(command, cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    # The adapter's account may also publish into rooms here, so that a test can post where no device may.
    acl.write_text(acl.read_text().replace("topic read rooms/+/in", "topic readwrite rooms/+/in", 1))
    config.write_text(
        f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\nallow_anonymous false\n"
        f"password_file {passwords}\nacl_file {acl}\n"
    )
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stderr=subprocess.DEVNULL)
    gateway.port = port
    try:
        wait_for_port(port, lambda: broker.poll() is None)  # else rungateway would embed a broker of its own
        yield start_gateway(gateway)
        assert gateway.process.stop() == 0
    finally:
        broker.kill()
        broker.wait()


def device_url(gateway, user: str = "sensor-7", password: str = "pw-sensor") -> str:
    return f"mqtt://{user}:{password}@127.0.0.1:{gateway.port}"


def test_mosquitto_knows_only_the_generated_accounts(secured):
    port = secured.port
    assert connect_rc(port, "sensor-7", "pw-sensor") == 0
    assert connect_rc(port, "sensor-7", "wrong") != 0
    assert connect_rc(port, "gateway", "gw-secret") == 0
    assert connect_rc(port, "nobody", "x") != 0


async def test_a_device_posts_into_its_room_as_itself_and_nowhere_else(secured):
    ws, _ = await join(secured, "plant")
    adapter = f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}"
    bare, named = MqttListener(adapter, "rooms/+/in"), MqttListener(adapter, "rooms/+/in/+")
    try:
        await apublish(device_url(secured), "rooms/open-air/in/sensor-7", "not my room")  # the ACL drops these
        await apublish(device_url(secured), "rooms/plant/in", "a topic that names nobody")
        await apublish(device_url(secured), "rooms/plant/in/sensor-9", json.dumps({"message": "I am sensor-9"}))
        claim = {"temperature": 19, "sender": "alice"}  # a claim, not an identity: the topic names sensor-7
        await apublish(device_url(secured), "rooms/plant/in/sensor-7", json.dumps(claim))
        event = await receive(ws)
        assert (event["sender"], event["data"]) == ("sensor-7", {"temperature": 19})
        assert "alice" not in json.dumps(event)
        assert [m.topic for m in named.wait(1)] == ["rooms/plant/in/sensor-7"]
        assert bare.messages == []  # published before the one that came through: dropped, not late
    finally:
        bare.close()
        named.close()
    stored = [m["message"] for m in await history(secured, "plant")]
    assert "I am sensor-9" not in stored and "a topic that names nobody" not in stored
    assert await history(secured, "open-air") == []
    await ws.close()


async def test_rotating_the_claimed_sender_does_not_lift_a_devices_rate(secured):
    ws, _ = await join(secured, "plant")
    payloads = [json.dumps({"message": f"r{n}", "sender": f"someone-{n}"}) for n in range(10)]
    await asyncio.to_thread(publish_burst, device_url(secured, "sensor-9", "pw-9"), "rooms/plant/in/sensor-9", payloads)
    # Ten claimed senders, one device: its burst of 2 passes, and the rest is dropped (one more may pass
    # if the adapter took over 5 s). Keyed on the claims, all ten would have passed.
    first = [await receive(ws) for _ in range(2)]
    assert [(m["message"], m["sender"]) for m in first] == [("r0", "sensor-9"), ("r1", "sensor-9")]
    secured.process.wait_for(f"rate limit: at most {RATE} a second for sensor-9", count=7)
    assert "a second for someone-" not in secured.process.output
    await ws.close()


async def test_a_bare_topic_post_is_refused_in_a_devices_only_room(secured):
    ws, _ = await join(secured, "plant")
    adapter = f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}"  # an account the ACL lets post there
    await apublish(adapter, "rooms/plant/in", json.dumps({"message": "who sent this?", "sender": "sensor-7"}))
    await apublish(device_url(secured), "rooms/plant/in/sensor-7", "after it")
    assert (await receive(ws))["message"] == "after it"
    secured.process.wait_for(
        "Rejected MQTT message on rooms/plant/in: room plant takes posts from its devices only, "
        "on rooms/plant/in/<device>"
    )
    assert "who sent this?" not in [m["message"] for m in await history(secured, "plant")]
    await ws.close()


async def test_the_adapter_refuses_rooms_that_take_no_mqtt(secured):
    ws, _ = await join(secured, "open-air")
    adapter = f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}"  # an account the ACL lets anywhere
    await apublish(adapter, "rooms/quiet/in", "quiet has no devices and is not MQTT-open")
    await apublish(adapter, "rooms/open-air/in", "open-air is MQTT-open")
    assert (await receive(ws))["message"] == "open-air is MQTT-open"
    secured.process.wait_for("Rejected MQTT message on rooms/quiet/in: room quiet takes no MQTT posts")
    await ws.close()


async def test_an_mqtt_open_room_takes_the_bare_topic_within_one_rate_for_all(secured):
    """Anyone may post on an open room's bare topic and name a sender (as an anonymous HTTP post may);
    such posts share the room's anonymous rate, which no claimed sender escapes."""
    ws, _ = await join(secured, "open-air")
    adapter = f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}"
    payloads = [json.dumps({"message": f"o{n}", "sender": f"visitor-{n}"}) for n in range(10)]
    await asyncio.to_thread(publish_burst, adapter, "rooms/open-air/in", payloads)
    first = await receive(ws)  # (an earlier test may have used some of the room's burst)
    assert (first["message"], first["sender"]) == ("o0", "visitor-0")
    secured.process.wait_for(f"rate limit: at most {RATE} a second for open-air/in", count=7)
    await ws.close()


async def test_a_claimed_sender_cannot_borrow_a_devices_message_ids(secured):
    """Retries are recognised by who sent them and their ``id``: a post on the bare topic claiming a
    device's name does not make the device's own message with that ``id`` look like a retry."""
    ws, _ = await join(secured, "open-air")
    adapter = f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}"
    await apublish(adapter, "rooms/open-air/in", json.dumps({"message": "forged", "sender": "meter-1", "id": 42}))
    assert (await receive(ws))["message"] == "forged"
    meter = device_url(secured, "meter-1", "pw-m")
    await apublish(meter, "rooms/open-air/in/meter-1", json.dumps({"message": "genuine", "id": 42}))
    event = await receive(ws)
    assert (event["message"], event["sender"]) == ("genuine", "meter-1")
    await ws.close()


async def test_the_room_page_and_adddevice_tell_a_device_its_topic(secured):
    status, page = await ahttp("GET", f"{secured.http}/chat/plant/")
    assert status == 200 and "-u DEVICE -P PASSWORD -t rooms/plant/in/DEVICE" in page
    status, page = await ahttp("GET", f"{secured.http}/chat/open-air/")
    assert status == 200 and "-t rooms/open-air/in -m" in page and "rooms/open-air/in/DEVICE" not in page
    command = manage("adddevice", "sensor-11", "--room", "plant")
    done = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, env=secured.env, capture_output=True, text=True)
    assert "plant: publish to rooms/plant/in/sensor-11, hear rooms/plant/out" in done.stdout, done.stderr


@pytest.fixture(scope="module", params=["mosquitto", "amqtt"])
def embedded(tmp_path_factory, request):
    """Closed rooms, and no broker at MQTT_URL: the gateway's embedded broker (the machine's Mosquitto
    with generated password and ACL files, or amqtt asking the database) enforces the devices."""
    port = free_port()
    gateway = prepare_gateway(
        tmp_path_factory.mktemp("embedded"),
        f"mqtt://gateway:gw-secret@127.0.0.1:{port}",
        ROOMS_OPEN="false",
        ROOMS_AUTO_CREATE="false",
        MQTT_EMBEDDED_BROKER=request.param,
        DEVICE_RATE=RATE,
    )
    gateway.broker = request.param
    subprocess.run(manage("shell", "-c", SETUP), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    gateway.port = port
    yield start_gateway(gateway)
    assert gateway.process.stop() == 0


async def test_the_embedded_broker_enforces_devices(embedded):
    assert f"(embedded {embedded.broker} broker, MQTT " in embedded.process.output.replace("Mosquitto", "mosquitto")
    assert "gw-secret" not in embedded.process.output and "gateway:***@" in embedded.process.output
    assert connect_rc(embedded.port, "sensor-7", "pw-sensor") == 0
    assert connect_rc(embedded.port, "sensor-7", "wrong") != 0
    assert connect_rc(embedded.port, "nobody", "x") != 0
    ws, _ = await join(embedded, "plant")
    await apublish(device_url(embedded), "rooms/open-air/in/sensor-7", "not my room")
    await apublish(device_url(embedded), "rooms/plant/in", "a topic that names nobody")
    await apublish(device_url(embedded), "rooms/plant/in/sensor-9", "as another device")
    await apublish(device_url(embedded), "rooms/plant/in/sensor-7", json.dumps({"message": "mine", "sender": "alice"}))
    event = await receive(ws)
    assert (event["message"], event["sender"]) == ("mine", "sensor-7")
    assert [m["message"] for m in await history(embedded, "plant")] == ["mine"]
    assert await history(embedded, "open-air") == []
    await ws.close()
