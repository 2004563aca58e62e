"""Hostile device payloads against a running gateway: each is answered (rejected, or parked as a dead
letter after a few failures), every good message published after them is stored, nothing is served
again forever; and ``/healthz`` says "stuck" while a message cannot be stored (the database is down)."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.topics import in_topic
from tests.support import fresh_database, http_json, launch_gateway, mqtt_publish, unique
from tests.test_outages import set_available

MAX_PAYLOAD = 64 * 1024  # the gateway's MQTT_MAX_PAYLOAD

wrong_types = st.one_of(
    st.integers(min_value=1),
    st.floats(allow_nan=False, allow_infinity=False).filter(bool),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=2),
)
lone_surrogates = st.integers(0xD800, 0xDFFF).map(lambda code: f'"\\u{code:04x}"')  # JSON text escaping one
not_finite = st.sampled_from(["NaN", "Infinity", "-Infinity"])
hostile_payloads = st.one_of(
    wrong_types.map(lambda value: json.dumps({"message": "x", "sender": value})),
    wrong_types.map(lambda value: json.dumps({"message": value})),
    st.lists(st.floats(), min_size=1, max_size=3).map(lambda value: json.dumps({"message": "x", "id": value})),
    not_finite.map(lambda number: f'{{"reading": {number}}}'),
    lone_surrogates.map(lambda text: f'{{"message": {text}}}'),
    lone_surrogates.map(lambda text: f'{{"message": "x", "sender": {text}}}'),
    lone_surrogates.map(lambda text: f'{{"reading": {text}}}'),
    st.integers(1_000, 20_000).map(lambda depth: '{"a": ' * depth + "1" + "}" * depth),
    st.integers(1, 10_000).map(lambda extra: "x" * (MAX_PAYLOAD + extra)),
    st.text(min_size=1, max_size=20).map(lambda text: json.dumps({"reading": text + "\x00"})),
).map(lambda text: text.encode("utf-8", "surrogatepass"))


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory, mosquitto):
    """A gateway of this module's own (its SQLite file is read to see the dead letters)."""
    directory = tmp_path_factory.mktemp("poisoned")
    gateway = launch_gateway(directory, mosquitto, DEVICE_RATE=1000, MQTT_STUCK_SECONDS=30)
    gateway.database = directory / "db.sqlite3"
    yield gateway
    assert gateway.process.stop() == 0, gateway.process.output


def scrape(gateway) -> dict[str, float]:
    status, text = http_json("GET", f"{gateway.http}/metrics")
    assert status == 200
    samples = re.findall(r"^(gateway_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in samples}


def stored(gateway, room: str) -> list[str]:
    status, body = http_json("GET", f"{gateway.http}/api/rooms/{room}/messages?limit=200")
    return [message["message"] for message in body["messages"]] if status == 200 else []


def dead_letters(gateway, topic: str) -> list[bytes]:
    with sqlite3.connect(gateway.database) as database:
        rows = database.execute("SELECT payload FROM gateway_deadletter WHERE topic = ?", (topic,)).fetchall()
    return [bytes(payload) for (payload,) in rows]


ONE_OF_EACH = [
    b'{"message": "x", "sender": 5}',
    b'{"message": "x", "sender": ["a"]}',
    b'{"message": 7}',
    b'{"message": "x", "id": 1.5}',
    b'{"reading": NaN}',
    b'{"message": "\\ud800"}',
    b'{"reading": "\\udc00"}',
    b'{"a": ' * 3000 + b"1" + b"}" * 3000,
    b"x" * (MAX_PAYLOAD + 1),
    b'{"reading": "a\\u0000"}',
]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile=st.lists(hostile_payloads, min_size=1, max_size=5))
@example(hostile=ONE_OF_EACH)
def test_hostile_payloads_are_answered_and_the_good_ones_after_them_stored(poisoned, hostile):
    room = unique("poisoned")
    topic = in_topic(room)
    good = [f"good {n}" for n in range(10)]
    before = scrape(poisoned)
    for payload in hostile:
        mqtt_publish(poisoned.mqtt_url, topic, payload)
    for text in good:
        mqtt_publish(poisoned.mqtt_url, topic, json.dumps({"message": text, "sender": "sensor"}))

    deadline = time.monotonic() + 60
    while sorted(stored(poisoned, room)) != sorted(good) or scrape(poisoned)["gateway_mqtt_oldest_unacked_seconds"]:
        assert time.monotonic() < deadline, f"stored {stored(poisoned, room)}, {scrape(poisoned)}"
        time.sleep(0.1)  # polling the gateway's answers with a deadline
    after = scrape(poisoned)

    # Every hostile payload was answered once: refused by the adapter (too large), rejected by the
    # application, or parked as a dead letter; none was stored, none is still being served.
    refused = sum(len(payload) > MAX_PAYLOAD for payload in hostile)
    rejected, parked = (
        after.get(name, 0) - before.get(name, 0)
        for name in ('gateway_rejects_total{protocol="mqtt"}', "gateway_mqtt_parked_total")
    )
    assert refused + rejected + parked == len(hostile)
    letters = dead_letters(poisoned, topic)
    assert len(letters) == parked and all(letter in hostile for letter in letters)
    status, health = http_json("GET", f"{poisoned.http}/healthz")
    assert status == 200 and health["components"]["mqtt"] == {"ok": True, "detail": "connected"}


@pytest.fixture
def database(postgres_host):
    with fresh_database("gw_stuck") as url:
        yield url


def mqtt_health(gateway) -> tuple[int, dict]:
    status, health = http_json("GET", f"{gateway.http}/healthz")
    return status, health["components"]["mqtt"]


def test_health_says_stuck_while_a_message_cannot_be_stored(tmp_path, mosquitto, database):
    gateway = launch_gateway(tmp_path, mosquitto, DATABASE_URL=database, MQTT_STUCK_SECONDS=1)
    room = unique("stuck")
    try:
        assert mqtt_health(gateway) == (200, {"ok": True, "detail": "connected"})
        set_available(database, False)
        mqtt_publish(gateway.mqtt_url, in_topic(room), "kept until the database is back")
        deadline = time.monotonic() + 30
        while not (state := mqtt_health(gateway))[1]["detail"].startswith("stuck"):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)  # polling /healthz with a deadline
        assert state[0] == 503 and state[1]["ok"] is False
        assert scrape(gateway)["gateway_mqtt_oldest_unacked_seconds"] > 1
        assert scrape(gateway)["gateway_mqtt_parked_total"] == 0  # served again, not parked: not its fault

        set_available(database, True)
        deadline = time.monotonic() + 30
        while stored(gateway, room) != ["kept until the database is back"] or mqtt_health(gateway)[0] != 200:
            assert time.monotonic() < deadline, (stored(gateway, room), mqtt_health(gateway))
            time.sleep(0.1)  # polling the history and /healthz with a deadline
        assert mqtt_health(gateway) == (200, {"ok": True, "detail": "connected"})
        assert scrape(gateway)["gateway_mqtt_retries"] >= 1
    finally:
        set_available(database, True)
        assert gateway.process.stop() == 0
