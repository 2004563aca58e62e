"""Nothing lost: 2,000 QoS 1 messages while the MQTT adapter is kill -9ed and restarted mid-stream
are all in the history exactly once (persistent session, PUBACK after commit, payload ids)."""

from __future__ import annotations

import json
import signal
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.topics import in_topic
from tests.support import Mosquitto, Process, gateway_env, manage, migrate, stored_texts, unique, wait_until

COUNT = 2000


@pytest.fixture
def roomy_broker(mosquitto):  # a broker that queues without limit for an absent persistent session
    broker = Mosquitto(config="allow_anonymous true\nmax_queued_messages 0").start()
    yield broker.url, broker.port
    broker.kill()


def publish_stream(port: int, room: str, count: int, *, ids: bool) -> tuple[paho.Client, list]:
    """Start publishing ``count`` QoS 1 messages m0, m1, … (with payload ids or without) from a thread;
    the publishing client and the list its publish receipts go into."""
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("loader"))
    publisher.max_inflight_messages_set(100)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    sent: list = []

    def publish_all() -> None:
        for n in range(count):
            message = {"message": f"m{n}", "sender": "loader", **({"id": n} if ids else {})}
            sent.append(publisher.publish(in_topic(room), json.dumps(message), qos=1))

    threading.Thread(target=publish_all, daemon=True).start()
    return publisher, sent


def all_published(sent: list, count: int, timeout: float = 60) -> None:
    """Wait until the broker has acknowledged all ``count`` messages to the publisher."""
    wait_until(lambda: len(sent) == count, timeout, "the publisher never sent them all")
    for info in sent:
        info.wait_for_publish(timeout)


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

    publisher, sent = publish_stream(port, room, COUNT, ids=True)
    try:
        wait_until(lambda: len(stored_texts(database, room)) >= COUNT // 4, 60, "the first quarter never arrived")
        adapter.popen.send_signal(signal.SIGKILL)
        adapter.popen.wait()
        at_the_kill = len(stored_texts(database, room))
        assert at_the_kill < COUNT, "the stream was over before the kill: nothing was tested"
        adapter = Process(manage("runmqtt"), env=env).start()
        adapter.wait_for("MQTT subscribed")
        all_published(sent, COUNT)
        wait_until(lambda: len(stored_texts(database, room)) >= COUNT, 120, "not everything arrived")
        texts = stored_texts(database, room)
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
            adapter.wait_for("MQTT subscribed to ['$share/gateways/rooms/+/in/+', '$share/gateways/rooms/+/in']")
        publisher, sent = publish_stream(port, room, 200, ids=False)
        all_published(sent, 200)
        publisher.loop_stop()
        publisher.disconnect()
        wait_until(lambda: len(stored_texts(database, room)) >= 200, 60, "not everything arrived")
        assert sorted(stored_texts(database, room)) == sorted(f"m{n}" for n in range(200))  # each once
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
    publisher, sent = publish_stream(port, room, 3000, ids=False)
    try:
        wait_until(lambda: len(stored_texts(database, room)) >= 50, 30, "nothing arrived")
        assert adapter.stop() == 0  # SIGTERM: finish what is in hand, acknowledge it, disconnect
        assert len(stored_texts(database, room)) < 3000, "the stream was over before the stop: nothing was tested"
        all_published(sent, 3000)
        adapter = Process(manage("runmqtt"), env=env).start()  # the persistent session has the rest
        wait_until(lambda: len(stored_texts(database, room)) >= 3000, 60, "not everything arrived")
        # No id in these payloads: nothing acknowledged was redelivered, nothing unacknowledged was lost.
        assert sorted(stored_texts(database, room)) == sorted(f"m{n}" for n in range(3000))
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        adapter.stop()
