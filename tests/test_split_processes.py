"""Scale-out shape: daphne, runmqtt and runsmtp as separate processes sharing Redis and PostgreSQL.

Every way in is handled by a different process than the WebSocket client's (daphne): MQTT by runmqtt,
mail by runsmtp, the HTTP API and the other WebSocket by daphne; the Redis channel layer carries each
message to the room's subscribers everywhere, and runmqtt publishes what entered elsewhere to the
``out`` topic.
"""

from __future__ import annotations

import json
import time

import pytest

from gateway.topics import in_topic, out_topic
from tests.support import (
    PYTHON,
    Gateway,
    MqttListener,
    Process,
    ahttp,
    apublish,
    asmtp,
    build_mail,
    free_port,
    fresh_database,
    gateway_env,
    history,
    http_json,
    join,
    manage,
    migrate,
    receive,
    unique,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def database(postgres_host):
    """A fresh PostgreSQL database for this module (its URL), dropped afterwards."""
    with fresh_database("gw_split") as url:
        yield url


def wait_until_serving(gateway: Gateway, process: Process, timeout: float = 30) -> None:
    """Poll /healthz (with a deadline) until daphne answers 200: listening, database and Redis reachable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http_json("GET", f"{gateway.http}/healthz")
        except OSError as exc:  # not listening yet
            status, body = None, exc
        if status == 200:
            return
        if process.popen.poll() is not None:
            raise AssertionError(f"daphne exited ({process.popen.returncode}):\n{process.output}")
        if time.monotonic() > deadline:
            raise AssertionError(f"daphne not serving after {timeout}s (last: {status} {body}):\n{process.output}")
        time.sleep(0.05)  # a deadline-bounded poll of a port, not synchronisation by time


def stop_all(processes: dict[str, Process]) -> dict[str, int | str]:
    """SIGTERM every process (even when one of them misbehaves); each one's exit code or failure."""
    codes: dict[str, int | str] = {}
    for name, process in processes.items():
        try:
            codes[name] = process.stop()
        except AssertionError as exc:  # did not stop on SIGTERM: stop() killed it
            codes[name] = str(exc)
    return codes


@pytest.fixture(scope="module")
def split(database, redis_host, mosquitto):
    """daphne, runmqtt and runsmtp on one set of settings; a Gateway with their ``processes``."""
    gateway = Gateway(free_port(), free_port(), mosquitto)
    env = gateway_env(
        DATABASE_URL=database,
        REDIS_URL=REDIS_URL,
        CHANNEL_LAYER_PREFIX=unique("gwsplit"),  # this run's keys only: no other run's consumers see them
        HTTP_PORT=gateway.http_port,
        SMTP_PORT=gateway.smtp_port,
        MQTT_URL=mosquitto,
        MAIL_SENDER_RATE=100,
    )
    migrate(env)
    daphne = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(gateway.http_port), "config.asgi:application"]
    processes = {
        "daphne": Process(daphne, env=env),
        "runmqtt": Process(manage("runmqtt"), env=env),
        "runsmtp": Process(manage("runsmtp"), env=env),
    }
    for process in processes.values():
        process.start()
    try:
        processes["runmqtt"].wait_for("MQTT subscribed")
        processes["runmqtt"].wait_for("Quit with Ctrl-C.")  # its banner, which may come after the SUBACK
        processes["runsmtp"].wait_for("Quit with Ctrl-C.")
        wait_until_serving(gateway, processes["daphne"])
        gateway.processes, gateway.env = processes, env
        yield gateway
    finally:
        codes = stop_all(processes)
    report = "\n\n".join(f"--- {name} ---\n{process.output}" for name, process in processes.items())
    assert codes["runmqtt"] == 0, f"runmqtt: {codes['runmqtt']}\n{report}"
    assert codes["runsmtp"] == 0, f"runsmtp: {codes['runsmtp']}\n{report}"
    assert codes["daphne"] == 0, f"daphne: {codes['daphne']}\n{report}"


def test_the_processes_share_redis_and_postgresql(split):
    runmqtt, runsmtp = split.processes["runmqtt"], split.processes["runsmtp"]
    database = split.env["DATABASE_URL"].rsplit("/", 1)[1]
    for process in (runmqtt, runsmtp):
        assert f"Channels   Redis {REDIS_URL}" in process.output
        assert f"Database   postgresql {database}" in process.output
    # Each adapter process runs its own adapter only.
    assert "MQTT       " in runmqtt.output and "SMTP       " not in runmqtt.output
    assert "SMTP       " in runsmtp.output and "MQTT       " not in runsmtp.output


async def test_every_way_in_reaches_a_websocket_client_on_daphne(split):
    room = unique()
    ws, before = await join(split, room)
    other, _ = await join(split, room)
    assert before == []

    await apublish(split.mqtt_url, in_topic(room), json.dumps({"message": "via runmqtt", "sender": "dev-1"}))
    event = await receive(ws)
    assert (event["room"], event["message"], event["source"], event["sender"]) == (room, "via runmqtt", "mqtt", "dev-1")

    mail = build_mail(f"{room}@localhost", "via runsmtp", "body", sender="carol@example.com")
    assert await asmtp(split.smtp_port, "carol@example.com", [f"{room}@localhost"], mail) == {}
    event = await receive(ws)
    assert (event["message"], event["source"], event["sender"]) == (
        "via runsmtp\n\nbody",
        "email",
        "Alice <carol@example.com>",
    )

    status, posted = await ahttp("POST", f"{split.http}/api/rooms/{room}/messages", {"message": "via HTTP"})
    assert status == 201, posted
    assert await receive(ws) == posted

    await other.send(json.dumps({"message": "via WebSocket"}))
    event = await receive(ws)
    assert (event["message"], event["source"]) == ("via WebSocket", "websocket")

    stored = await history(split, room)
    assert [(m["message"], m["source"]) for m in stored] == [
        ("via runmqtt", "mqtt"),
        ("via runsmtp\n\nbody", "email"),
        ("via HTTP", "http"),
        ("via WebSocket", "websocket"),
    ]
    ids = [m["id"] for m in stored]
    assert ids == sorted(set(ids))
    assert stored[2] == posted
    await ws.close()
    await other.close()


async def test_runmqtt_publishes_what_entered_through_daphne_to_the_out_topic(split):
    room = unique()
    listener = MqttListener(split.mqtt_url, out_topic(room))
    try:
        status, posted = await ahttp("POST", f"{split.http}/api/rooms/{room}/messages", {"message": "to devices"})
        assert status == 201, posted
        [message] = listener.wait(1)
    finally:
        listener.close()
    assert message.topic == out_topic(room)
    assert json.loads(message.payload) == posted
    assert await history(split, room) == [posted]
