"""Outages: mail sent while the database is unavailable gets 451, and is stored once when the
sending server retries; /healthz says so meanwhile."""

from __future__ import annotations

import json
import smtplib
import subprocess
import time

import psycopg
import pytest
import websockets

from gateway.topics import in_topic
from tests.support import (
    PYTHON,
    Gateway,
    Process,
    ahttp,
    apublish,
    asmtp,
    build_mail,
    free_port,
    fresh_database,
    gateway_env,
    history,
    join,
    launch_gateway,
    manage,
    migrate,
    postgres_admin,
    receive,
    unique,
    wait_for_port,
)


@pytest.fixture
def database(postgres_host):
    """A fresh PostgreSQL database (its URL), dropped afterwards."""
    with fresh_database("gw_outage") as url:
        yield url


def set_available(url: str, available: bool) -> None:
    """Open or shut the database: shut, it refuses new connections and drops the existing ones."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_admin()[1], autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(available).lower()}')
        if not available:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def deliver(gateway, room: str, mail: str) -> int:
    """The SMTP verdict on one mail: 250, or the refusal's code (at RCPT or after DATA)."""
    try:
        await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], mail)
    except smtplib.SMTPRecipientsRefused as refused:
        return next(iter(refused.recipients.values()))[0]
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code
    return 250


async def test_mail_during_a_database_outage_gets_451_and_is_stored_once_on_retry(tmp_path, database, mosquitto):
    gateway = launch_gateway(tmp_path, mosquitto, DATABASE_URL=database)
    room = unique()
    mail = build_mail(room, "During the outage", "keep me")  # one Message-ID, as a retrying server sends it
    try:
        set_available(database, False)
        assert await deliver(gateway, room, mail) == 451  # try again later: the sending server keeps the mail
        status, health = await ahttp("GET", f"{gateway.http}/healthz")
        assert status == 503 and health["components"]["database"]["ok"] is False

        set_available(database, True)
        deadline = time.monotonic() + 20
        while (code := await deliver(gateway, room, mail)) != 250:  # the sending server's retries
            assert code == 451 and time.monotonic() < deadline, code
        assert await deliver(gateway, room, mail) == 250  # and once more, as a server that lost our 250 would
        assert [m["message"] for m in await history(gateway, room)] == ["During the outage\n\nkeep me"]
    finally:
        set_available(database, True)
        assert gateway.process.stop() == 0


async def test_http_and_websocket_posts_during_a_database_outage_are_answered_and_work_after(
    tmp_path, database, mosquitto
):
    """The database is down, not the post: HTTP answers 503 (try again), a WebSocket gets an error frame
    and stays open, and the same socket posts again once the database is back."""
    gateway = launch_gateway(tmp_path, mosquitto, DATABASE_URL=database)
    room = unique()
    try:
        ws, _ = await join(gateway, room)
        set_available(database, False)
        status, body = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "lost?"})
        assert status == 503 and "try again" in body["error"], body
        await ws.send(json.dumps({"message": "during", "ref": "r1"}))
        error = await receive(ws, "error")
        assert error["ref"] == "r1" and "not posted" in error["error"], error

        set_available(database, True)
        deadline = time.monotonic() + 20
        while (
            status := (await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "after"}))[0]
        ) != 201:
            assert status == 503 and time.monotonic() < deadline, status  # the pool's dead connections go first
        await ws.send(json.dumps({"message": "on the same socket"}))
        seen = [(await receive(ws))["message"], (await receive(ws))["message"]]
        assert seen == ["after", "on the same socket"]
        await ws.close()
    finally:
        set_available(database, True)
        assert gateway.process.stop() == 0


class ThrowawayRedis:
    """A Redis of this test's own, so restarting it troubles nobody."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, lambda: self.process.poll() is None)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


async def test_redis_restart_mid_stream_with_split_processes(tmp_path, redis_host, mosquitto):
    """daphne and runmqtt on one Redis, restarted mid-stream: the reader on daphne hears everything that
    entered over HTTP and MQTT, once and in id order; the gap is filled from the history."""
    redis = ThrowawayRedis()
    redis.start()
    port = free_port()
    env = gateway_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL=redis.url,
        MQTT_URL=mosquitto,
        GROUP_REFRESH_SECONDS=0.5,
    )
    migrate(env)
    daphne = Process([PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], env=env)
    processes = [daphne.start(), Process(manage("runmqtt"), env=env).start()]
    gateway = Gateway(port, 0, mosquitto)
    room, posted, received = unique(), [], []
    try:
        daphne.wait_for("Listening on TCP address")
        processes[1].wait_for("MQTT subscribed")
        ws, _ = await join(gateway, room)

        async def post(text: str) -> None:  # alternately over HTTP (daphne) and MQTT (runmqtt)
            if len(posted) % 2:
                await apublish(mosquitto, in_topic(room), text)
            else:
                status, _ = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": text})
                assert status == 201
            posted.append(text)

        await post("before")
        event = await receive(ws)
        received.append(event)
        redis.kill()
        await post("while Redis is down (HTTP)")  # stored; live delivery fails and is logged
        await post("while Redis is down (MQTT)")
        redis.start()
        deadline = time.monotonic() + 30
        while {e["message"] for e in received} != set(posted):  # keep talking until the reader heard it all
            assert time.monotonic() < deadline, (posted, received, daphne.output[-3000:])
            await post(f"after {len(posted)}")
            try:
                while True:
                    received.append(await receive(ws, timeout=0.5))
            except TimeoutError:
                pass
            except websockets.ConnectionClosed:  # the layer failed under the consumer: reconnect, as a page does
                ws, missed = await join(gateway, room, f"?after={received[-1]['id']}")
                received += missed
        ids = [e["id"] for e in received]
        assert ids == list(range(1, len(posted) + 1))  # every message once, in id order
        assert sorted(e["message"] for e in received) == sorted(posted)
        await ws.close()
    finally:
        for process in processes:
            process.stop()
        redis.kill()
