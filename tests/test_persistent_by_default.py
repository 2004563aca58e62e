"""Persistent by default: ``runmqtt`` with no MQTT settings keeps its broker session across a kill -9,
several adapters (on one host, on "two hosts") each keep their own, and two clients given one id are
told apart from a network fault: said once, and backed off, not a reconnect storm."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.topics import in_topic
from protocols.mqtt import MqttServer
from protocols.mqtt.server import MQTT5, MQTT311
from tests.support import (
    Mosquitto,
    Process,
    gateway_env,
    http_json,
    launch_gateway,
    manage,
    migrate,
    stored_texts,
    unique,
    wait_until,
)

COUNT, RATE = 1000, 400  # a device flushing what it buffered offline, at 400 a second


@pytest.fixture
def broker(mosquitto):
    """A Mosquitto as installed: its defaults (20 in flight, 1000 queued), anonymous access only added."""
    broker = Mosquitto().start()
    yield broker
    broker.kill()


def flush_readings(port: int, room: str, count: int, rate: float) -> list:
    """Publish ``count`` QoS 1 readings r0, r1, … (no ids) at ``rate`` a second, from a thread; the list
    their publish receipts go into."""
    device = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("sensor"))
    device.max_inflight_messages_set(100)
    device.connect("127.0.0.1", port)
    device.loop_start()
    sent: list = []

    def publish_all() -> None:
        started = time.monotonic()
        for n in range(count):
            reading = {"sender": "buffered-sensor", "message": f"r{n}"}
            sent.append(device.publish(in_topic(room), json.dumps(reading), qos=1))
            time.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))  # pacing the device, not waiting
        for info in sent:
            info.wait_for_publish(60)
        device.loop_stop()
        device.disconnect()

    threading.Thread(target=publish_all, daemon=True).start()
    return sent


def client_id(adapter: Process) -> str:
    adapter.wait_for("MQTT connected")
    [line] = [line for line in adapter.lines if "MQTT connected" in line][:1]
    return re.search(r" as (\S+) \(", line).group(1)


def test_kill_9_while_flushing_loses_and_repeats_nothing_with_no_settings(tmp_path, broker):
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(DATABASE_URL=f"sqlite:///{database}", MQTT_URL=broker.url)  # and nothing else
    migrate(env)
    adapter = Process(manage("runmqtt"), env=env).start()
    adapter.wait_for("MQTT subscribed")
    first_id = client_id(adapter)

    sent = flush_readings(broker.port, room, COUNT, RATE)
    try:
        wait_until(lambda: len(stored_texts(database, room)) >= 150, 30, "the first readings never arrived")
        adapter.popen.send_signal(signal.SIGKILL)
        adapter.popen.wait()
        sent_at_kill = len(sent)
        wait_until(lambda: len(sent) >= min(COUNT, sent_at_kill + 2 * RATE), 30, "the device stopped")  # 2 s
        assert len(stored_texts(database, room)) < COUNT, "the flush was over before the restart: nothing was tested"
        adapter = Process(manage("runmqtt"), env=env).start()
        adapter.wait_for("MQTT subscribed")
        assert client_id(adapter) == first_id
        adapter.wait_for("resumed its session")
        wait_until(lambda: len(stored_texts(database, room)) >= COUNT, 60, "not every reading arrived")
        texts = stored_texts(database, room)
        assert sorted(texts) == sorted(f"r{n}" for n in range(COUNT))  # every one, exactly once
        assert "rate limit" not in adapter.output  # over the device's rate, and all stored
    finally:
        adapter.stop()


def test_adapters_with_defaults_on_one_host_keep_their_own_sessions(tmp_path, broker):
    """Two adapters in a shared group, with defaults otherwise: their own ids; one killed and restarted
    takes its id (and session) back; the other never loses its connection; nothing lost meanwhile."""
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(DATABASE_URL=f"sqlite:///{database}", MQTT_URL=broker.url, MQTT_SHARED_GROUP="gw")
    migrate(env)
    first, second = (Process(manage("runmqtt"), env=env).start() for _ in range(2))
    try:
        first.wait_for("MQTT subscribed")
        second.wait_for("MQTT subscribed")
        first_id, second_id = client_id(first), client_id(second)
        assert first_id != second_id
        sent = flush_readings(broker.port, room, COUNT // 2, RATE)
        wait_until(lambda: len(stored_texts(database, room)) >= 100, 30, "the first readings never arrived")
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait()
        first = Process(manage("runmqtt"), env=env).start()
        first.wait_for("MQTT subscribed")
        assert client_id(first) == first_id  # its slot, so its session, back
        wait_until(lambda: len(sent) == COUNT // 2, 30, "the device stopped")
        wait_until(lambda: len(stored_texts(database, room)) >= COUNT // 2, 60, "not every reading arrived")
        assert sorted(stored_texts(database, room)) == sorted(f"r{n}" for n in range(COUNT // 2))
        for adapter in (first, second):
            assert "in use by another client" not in adapter.output
        assert second.count("MQTT connected") == 1, second.output  # never dropped
    finally:
        first.stop()
        second.stop()


def test_adapters_on_two_hosts_do_not_take_each_others_id(tmp_path, broker):
    """Two hosts: each its own node name (its host name by default) and its own slots, here in one
    directory as they would be on one shared disk: the first slot on each, different ids."""
    database = tmp_path / "db.sqlite3"
    slots = tmp_path / "slots"
    env = gateway_env(DATABASE_URL=f"sqlite:///{database}", MQTT_URL=broker.url, MQTT_SLOT_DIR=slots)
    migrate(env)
    hosts = [Process(manage("runmqtt"), env={**env, "MQTT_NODE_NAME": name}).start() for name in ("alpha", "beta")]
    try:
        ids = [client_id(host) for host in hosts]
        assert ids == ["gateway-alpha-1", "gateway-beta-1"]
        for host in hosts:
            host.wait_for("MQTT subscribed")
        another = Process(manage("runmqtt"), env={**env, "MQTT_NODE_NAME": "alpha"}).start()
        hosts.append(another)
        assert client_id(another) == "gateway-alpha-2"  # a second adapter on alpha: the next slot
        another.wait_for("MQTT subscribed")
        assert [host.count("MQTT connected") for host in hosts] == [1, 1, 1]
    finally:
        for host in hosts:
            host.stop()


@pytest.mark.parametrize("protocol", [MQTT5, MQTT311], ids=["mqtt5", "mqtt311"])
async def test_one_client_id_twice_is_said_and_backed_off(broker, protocol):
    """The broker drops whichever connected first, each reconnect in turn: one says so (MQTT 5: the
    broker's reason; 3.1.1: dropped soon after connecting, again and again) and backs off."""

    async def application(scope, receive, send):
        await send({"type": "mqtt.ack"})

    shared_id = unique("twin")
    twins = [
        MqttServer(application, broker.url, client_id=shared_id, topics=[], publish_group=None, protocol=protocol)
        for _ in range(2)
    ]

    def connections() -> int:
        return sum(twin.reconnects + twin.connected for twin in twins)

    try:
        for twin in twins:
            await twin.start()
        async with asyncio.timeout(30):
            while not any(twin.conflict for twin in twins):
                await asyncio.sleep(0.05)  # polling the attribute, with a deadline
        [told, *_] = [twin for twin in twins if twin.conflict]
        assert f"client id {shared_id} in use by another client" in told.conflict
        at_notice = connections()
        # Measured over a window: at the 0.5 s reconnect delay, two twins would connect ~24 times in 6 s.
        await asyncio.sleep(6)
        assert connections() - at_notice <= 8, f"{connections() - at_notice} connections in 6 s: a storm"
    finally:
        for twin in twins:
            await twin.stop()


def test_an_adapter_that_stops_for_good_leaves_its_shared_group(tmp_path, broker):
    """The broker gives an absent member of a shared group its share all the same (kept in its session
    until it returns): an adapter stopped for good (SIGTERM, a scale-down) leaves the group first, so
    the rest get everything at once."""
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(DATABASE_URL=f"sqlite:///{database}", MQTT_URL=broker.url, MQTT_SHARED_GROUP="gw")
    migrate(env)
    staying, leaving = (Process(manage("runmqtt"), env=env).start() for _ in range(2))
    try:
        staying.wait_for("MQTT subscribed")
        leaving.wait_for("MQTT subscribed")
        assert leaving.stop() == 0
        sent = flush_readings(broker.port, room, 200, RATE)
        wait_until(lambda: len(sent) == 200, 30, "the device stopped")
        wait_until(lambda: len(stored_texts(database, room)) >= 200, 30, "the stopped adapter's share never arrived")
        assert sorted(stored_texts(database, room)) == sorted(f"r{n}" for n in range(200))
    finally:
        staying.stop()
        leaving.stop()


def test_two_gateways_given_one_client_id_say_so_in_healthz(tmp_path, broker):
    shared_id = unique("same-id")
    gateways = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        gateways.append(launch_gateway(tmp_path / name, broker.url, MQTT_CLIENT_ID=shared_id))
    try:
        deadline = time.monotonic() + 30
        while True:
            answers = [http_json("GET", f"{gateway.http}/healthz") for gateway in gateways]
            told = [body["components"]["mqtt"] for _, body in answers if not body["components"]["mqtt"]["ok"]]
            if any("in use by another client" in component["detail"] for component in told):
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.1)  # polling /healthz, with a deadline
        assert any(status == 503 for status, _ in answers)
        assert any(gateway.process.count(f"client id {shared_id} in use by another client") for gateway in gateways)
    finally:
        for gateway in gateways:
            gateway.process.stop()
