"""Scale-out shape: daphne, runmqtt and runsmtp as separate processes on Redis and PostgreSQL."""

from __future__ import annotations

import json
import socket
import time

import psycopg
import pytest

from tests.support import (
    MOSQUITTO_URL,
    PYTHON,
    Gateway,
    MqttListener,
    Process,
    ahttp,
    apublish,
    asmtp,
    build_mail,
    free_port,
    gateway_env,
    history,
    join,
    manage,
    migrate,
    receive,
    unique,
)


def wait_until_listening(port: int, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nothing listening on {port}:\n{process.output}") from None
            time.sleep(0.05)  # polling a port with a deadline, not synchronising on time


@pytest.fixture(scope="module")
def database(postgres_host):
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    name = unique("gw_test").replace("-", "_")
    admin = "dbname=test host=127.0.0.1 user=postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def split(database, redis_host, mosquitto):
    gateway = Gateway(free_port(), free_port(), mosquitto)
    env = gateway_env(
        DATABASE_URL=database,
        REDIS_URL="redis://127.0.0.1:6379/0",
        CHANNEL_LAYER_PREFIX=unique("gwtest"),  # keys of this run only
        SMTP_PORT=gateway.smtp_port,
        MQTT_URL=MOSQUITTO_URL,
    )
    migrate(env)
    asgi = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(gateway.http_port), "config.asgi:application"]
    processes = {
        "daphne": Process(asgi, env=env).start(),
        "runmqtt": Process(manage("runmqtt"), env=env).start(),
        "runsmtp": Process(manage("runsmtp"), env=env).start(),
    }
    try:
        processes["runmqtt"].wait_for("MQTT subscribed")
        processes["runsmtp"].wait_for("Quit with Ctrl-C")
        wait_until_listening(gateway.http_port, processes["daphne"])
        gateway.processes = processes
        yield gateway
    finally:
        codes = {name: process.stop() for name, process in processes.items()}
    assert codes["runmqtt"] == 0 and codes["runsmtp"] == 0, codes


async def test_every_way_in_reaches_a_websocket_in_another_process(split):
    room = unique()
    ws, _ = await join(split, room)
    other, _ = await join(split, room)

    await apublish(split.mqtt_url, f"rooms/{room}/in", "via runmqtt")
    assert (await receive(ws))["source"] == "mqtt"
    await asmtp(split.smtp_port, "a@example.com", [f"{room}@localhost"], build_mail(room, "via runsmtp", "body"))
    assert (await receive(ws))["source"] == "email"
    status, _ = await ahttp("POST", f"{split.http}/api/rooms/{room}/messages", {"message": "via HTTP"})
    assert status == 201 and (await receive(ws))["source"] == "http"
    await other.send(json.dumps({"message": "via WebSocket"}))
    assert (await receive(ws))["source"] == "websocket"

    stored = await history(split, room)
    assert [m["message"] for m in stored] == ["via runmqtt", "via runsmtp\n\nbody", "via HTTP", "via WebSocket"]
    assert [m["id"] for m in stored] == [1, 2, 3, 4]
    await ws.close()
    await other.close()


async def test_runmqtt_publishes_what_enters_elsewhere_to_the_out_topic(split):
    room = unique()
    listener = MqttListener(split.mqtt_url, f"rooms/{room}/out")
    try:
        status, posted = await ahttp("POST", f"{split.http}/api/rooms/{room}/messages", {"message": "to devices"})
        [message] = listener.wait(1)
    finally:
        listener.close()
    assert json.loads(message.payload) == posted
