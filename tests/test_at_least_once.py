"""Nothing lost: 2,000 QoS 1 messages while the MQTT adapter is kill -9ed and restarted mid-stream
are all in the history exactly once (persistent session, PUBACK after commit, payload ids)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import Process, free_port, gateway_env, manage, migrate, unique

COUNT = 2000


@pytest.fixture
def roomy_broker(tmp_path, mosquitto):  # a broker that queues without limit for an absent persistent session
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        probe = paho.Client(CallbackAPIVersion.VERSION2)
        try:
            probe.connect("127.0.0.1", port)
            probe.disconnect()
            break
        except OSError:
            assert time.monotonic() < deadline and broker.poll() is None, "mosquitto did not start"
            time.sleep(0.02)  # polling a port with a deadline
    yield f"mqtt://127.0.0.1:{port}", port
    broker.kill()
    broker.wait()


def stored(database, room: str) -> list[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT text FROM gateway_message JOIN gateway_room ON gateway_room.id = room_id WHERE name = ?", (room,)
        )
        return [text for (text,) in rows]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)  # polling the database with a deadline


def test_kill_9_mid_stream_loses_and_repeats_nothing(tmp_path, roomy_broker):
    url, port = roomy_broker
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(
        DATABASE_URL=f"sqlite:///{database}",
        MQTT_URL=url,
        MQTT_CLIENT_ID=unique("adapter"),  # fixed: a persistent session survives the kill
        DEVICE_RATE=0,
        ROOM_RATE=0,
    )
    migrate(env)
    adapter = Process(manage("runmqtt"), env=env).start()
    adapter.wait_for("MQTT subscribed")

    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("loader"))
    publisher.max_inflight_messages_set(100)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    sent: list = []

    def publish_all() -> None:
        for n in range(COUNT):
            payload = json.dumps({"message": f"m{n}", "sender": "loader", "id": n})
            sent.append(publisher.publish(f"rooms/{room}/in", payload, qos=1))

    thread = threading.Thread(target=publish_all)
    thread.start()
    try:
        wait_until(lambda: len(stored(database, room)) >= COUNT // 4, 60, "the first quarter never arrived")
        adapter.popen.send_signal(signal.SIGKILL)
        adapter.popen.wait()
        at_the_kill = len(stored(database, room))
        assert at_the_kill < COUNT, "the stream was over before the kill: nothing was tested"
        adapter = Process(manage("runmqtt"), env=env).start()
        adapter.wait_for("MQTT subscribed")
        thread.join(60)
        for info in sent:
            info.wait_for_publish(60)  # the broker has them all (PUBACK to the publisher)
        wait_until(lambda: len(stored(database, room)) >= COUNT, 120, "not everything arrived")
        texts = stored(database, room)
        assert sorted(texts) == sorted(f"m{n}" for n in range(COUNT))  # every one, exactly once
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        adapter.stop()


def test_two_adapters_in_a_shared_group_split_the_load_without_duplicates(tmp_path, roomy_broker):
    url, port = roomy_broker
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(DATABASE_URL=f"sqlite:///{database}", MQTT_URL=url, MQTT_SHARED_GROUP="gateways", DEVICE_RATE=0)
    migrate(env)
    adapters = [
        Process(manage("runmqtt"), env={**env, "MQTT_CLIENT_ID": unique(f"adapter{n}")}).start() for n in range(2)
    ]
    try:
        for adapter in adapters:
            adapter.wait_for("MQTT subscribed to ['$share/gateways/rooms/+/in']")
        publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("loader"))
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        infos = [
            publisher.publish(f"rooms/{room}/in", json.dumps({"message": f"m{n}", "sender": "loader"}), qos=1)
            for n in range(200)
        ]
        for info in infos:
            info.wait_for_publish(30)
        publisher.loop_stop()
        publisher.disconnect()
        wait_until(lambda: len(stored(database, room)) >= 200, 60, "not everything arrived")
        assert sorted(stored(database, room)) == sorted(f"m{n}" for n in range(200))  # each once
    finally:
        codes = [adapter.stop() for adapter in adapters]
    assert codes == [0, 0]


def test_sigterm_mid_stream_drains_and_loses_nothing(tmp_path, roomy_broker):
    url, port = roomy_broker
    room, database = unique(), tmp_path / "db.sqlite3"
    env = gateway_env(
        DATABASE_URL=f"sqlite:///{database}", MQTT_URL=url, MQTT_CLIENT_ID=unique("adapter"), DEVICE_RATE=0, ROOM_RATE=0
    )
    migrate(env)
    adapter = Process(manage("runmqtt"), env=env).start()
    adapter.wait_for("MQTT subscribed")
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("loader"))
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    infos = [
        publisher.publish(f"rooms/{room}/in", json.dumps({"message": f"m{n}", "sender": "loader"}), qos=1)
        for n in range(3000)
    ]
    try:
        wait_until(lambda: len(stored(database, room)) >= 50, 30, "nothing arrived")
        assert adapter.stop() == 0  # SIGTERM: finish what is in hand, acknowledge it, disconnect
        assert len(stored(database, room)) < 3000, "the stream was over before the stop: nothing was tested"
        for info in infos:
            info.wait_for_publish(30)
        adapter = Process(manage("runmqtt"), env=env).start()  # the persistent session has the rest
        wait_until(
            lambda: len(stored(database, room)) >= 3000, 20, f"not everything arrived: {len(stored(database, room))}"
        )
        # No id in these payloads: nothing acknowledged was redelivered, nothing unacknowledged was lost.
        assert sorted(stored(database, room)) == sorted(f"m{n}" for n in range(3000))
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        adapter.stop()
