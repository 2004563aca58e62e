"""MQTT devices: Django objects with credentials and rooms, enforced by Mosquitto (from generated
password and ACL files) and by the embedded broker; the adapter refuses rooms that take no MQTT."""

from __future__ import annotations

import getpass
import json
import subprocess

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import (
    ROOT,
    MqttListener,
    apublish,
    free_port,
    history,
    join,
    manage,
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
Room.objects.create(name="open-air", public=True, mqtt_open=True)
device = Device(name="sensor-7"); device.set_password("pw-sensor"); device.save(); device.rooms.add(plant)
"""


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
        directory, f"mqtt://gateway:gw-secret@127.0.0.1:{port}", ROOMS_OPEN="false", ROOMS_AUTO_CREATE="false"
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


async def test_a_device_posts_into_its_room_and_nowhere_else(secured):
    ws, _ = await join(secured, "plant")
    spy = MqttListener(f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}", "rooms/+/in")
    try:
        await apublish(device_url(secured), "rooms/open-air/in", "not my room")  # the ACL drops it
        await apublish(device_url(secured), "rooms/plant/in", json.dumps({"temperature": 19, "sender": "sensor-7"}))
        event = await receive(ws)
        assert (event["sender"], event["data"]) == ("sensor-7", {"temperature": 19})
        assert [m.topic for m in spy.wait(1)] == ["rooms/plant/in"]
    finally:
        spy.close()
    assert await history(secured, "open-air") == []
    await ws.close()


async def test_the_adapter_refuses_rooms_that_take_no_mqtt(secured):
    ws, _ = await join(secured, "plant")
    adapter = f"mqtt://gateway:gw-secret@127.0.0.1:{secured.port}"  # an account the ACL lets anywhere
    await apublish(adapter, "rooms/quiet/in", "quiet has no devices and is not MQTT-open")
    await apublish(adapter, "rooms/plant/in", "plant has a device")
    assert (await receive(ws))["message"] == "plant has a device"
    secured.process.wait_for("Rejected MQTT message on rooms/quiet/in: room quiet takes no MQTT posts")
    await ws.close()


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
    await apublish(device_url(embedded), "rooms/open-air/in", "not my room")
    await apublish(device_url(embedded), "rooms/plant/in", "mine")
    assert (await receive(ws))["message"] == "mine"
    assert await history(embedded, "open-air") == []
    await ws.close()
