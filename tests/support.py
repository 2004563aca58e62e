"""Test helpers: gateway processes, and real WebSocket, MQTT, SMTP and HTTP clients."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import psycopg
import pytest
import websockets
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REDIS_HOST = ("127.0.0.1", 6379)
POSTGRES_HOST = ("127.0.0.1", 5432)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(prefix: str = "t") -> str:
    """A fresh room name, so tests never see each other's traffic on the shared broker."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def require_service(name: str, address: tuple[str, int], hint: str) -> None:
    try:
        socket.create_connection(address, timeout=3).close()
    except OSError as exc:
        pytest.fail(f"{name} is not answering on {address[0]}:{address[1]} ({exc}). {hint}", pytrace=False)


# Where the gateway finds its services: each test says, never the environment the tests run in.
SERVICE_VARIABLES = (
    "REDIS_URL",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "DATABASE_URL",
    "MQTT_URL",
)


def find_postgres_admin() -> tuple[str, str]:
    """A user the local PostgreSQL trusts, and a connection string to its ``test`` database (the tests'
    and the bench's); RuntimeError, saying why, when there is none."""
    errors = []
    for user in ("postgres", "root"):
        dsn = f"dbname=test host={POSTGRES_HOST[0]} port={POSTGRES_HOST[1]} user={user}"
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            errors.append(f"{user}: {exc}")
            continue
        return user, dsn
    raise RuntimeError(f"PostgreSQL on {POSTGRES_HOST[0]}:{POSTGRES_HOST[1]} accepts neither postgres nor root:\n"
                       + "\n".join(errors))  # fmt: skip


def postgres_admin() -> tuple[str, str]:
    try:
        return find_postgres_admin()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new database on the machine's PostgreSQL (its URL), dropped afterwards, even if it was shut."""
    user, admin = postgres_admin()
    name = unique(prefix).replace("-", "_")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://{user}@{POSTGRES_HOST[0]}:{POSTGRES_HOST[1]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """``fresh_database`` with the project's tables in it."""
    with fresh_database(prefix) as url:
        migrate(gateway_env(DATABASE_URL=url))
        yield url


def migrated_database_fixture(prefix: str) -> Any:
    """A test module's ``database`` fixture: one ``migrated_database`` for the module (PostgreSQL must answer)."""

    @pytest.fixture(scope="module")
    def database(request: pytest.FixtureRequest) -> Iterator[str]:
        request.getfixturevalue("postgres_host")
        with migrated_database(prefix) as url:
            yield url

    return database


def gateway_env(**settings: Any) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", LOG_LEVEL="INFO")
    env.update({key: str(value) for key, value in settings.items()})
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def manage(*args: str) -> list[str]:
    return [PYTHON, "manage.py", *args]


class Process:
    """A command (run from the project root) in a subprocess, its output kept for assertions and reports."""

    def __init__(self, argv: list[str], *, env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> None:
        self.argv, self.env, self.pass_fds = argv, env, pass_fds  # pass_fds: a held listening socket (--fd N)
        self.name = " ".join(argv[1:3])
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=self.pass_fds,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_for(self, text: str, *, count: int = 1, timeout: float = 30) -> None:
        """Wait until ``text`` has appeared in ``count`` output lines."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.count(text) < count:
                if self.popen.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited ({self.popen.returncode}) before {text!r}:\n{self.output}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name} never printed {text!r} in {timeout}s:\n{self.output}")
                self._changed.wait(remaining)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as a service manager would, and the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.output}") from None
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class Gateway:
    """Where a running gateway (or set of processes) can be reached."""

    def __init__(self, http_port: int, smtp_port: int, mqtt_url: str) -> None:
        self.http_port, self.smtp_port, self.mqtt_url = http_port, smtp_port, mqtt_url

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ws(self, room: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws/chat/{room}/{query}"


def wait_for_port(port: int, alive: Any = lambda: True, timeout: float = 10) -> None:
    """Wait until something accepts connections on ``port`` (while ``alive()``), with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise AssertionError(f"nothing listening on {port}") from None
            time.sleep(0.02)  # polling a port with a deadline


class Mosquitto:
    """A throwaway Mosquitto on a port of its own: tests neither see nor disturb anyone else's traffic,
    and may restart it. ``config`` adds lines to its configuration (password and ACL files, queue sizes)."""

    def __init__(self, port: int | None = None, config: str = "allow_anonymous true") -> None:
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        handle, self.config = tempfile.mkstemp(suffix=".conf", prefix="mosquitto-")
        with os.fdopen(handle, "w") as file:
            # Run as the tester (root would otherwise drop to "mosquitto", who cannot read pytest's files).
            file.write(f"listener {self.port} 127.0.0.1\nuser {getpass.getuser()}\n{config}\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> Mosquitto:
        # Its log goes to a file: a pipe nobody reads fills up (64 KiB of connection lines), and then the
        # broker blocks on its next log line and stops serving everyone.
        self.output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (the broker's lifetime)
        self.process = subprocess.Popen(["mosquitto", "-c", self.config], stdout=subprocess.DEVNULL, stderr=self.output)
        try:
            wait_for_port(self.port, lambda: self.process.poll() is None, timeout)
        except AssertionError:
            self.output.seek(0)
            raise AssertionError(f"mosquitto did not start: {self.output.read()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: clients' connections drop without a DISCONNECT."""
        self.process.kill()
        self.process.wait()
        self.output.close()


# HTTP


def http_json(method: str, url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, content = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, content = error.code, error.read()
    try:
        return status, json.loads(content)
    except ValueError:
        return status, content.decode(errors="replace")


async def ahttp(method: str, url: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(http_json, method, url, body, **kwargs)


async def history(gateway: Gateway, room: str) -> list[dict]:
    status, body = await ahttp("GET", f"{gateway.http}/api/rooms/{room}/messages")
    assert status == 200, body
    return body["messages"]


# WebSocket


async def receive(ws, kind: str = "message", timeout: float = 10) -> dict:
    """The next object of type ``kind`` from the server, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == kind:
                return event


async def join(gateway: Gateway, room: str, query: str = ""):
    """Open a room's WebSocket and consume the history it sends first; returns (ws, history)."""
    ws = await websockets.connect(gateway.ws(room, query), open_timeout=10)
    first = await receive(ws, "history")
    return ws, first["messages"]


# MQTT


def mqtt_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or 1883


def mqtt_client(url: str, prefix: str) -> paho.Client:
    """A paho client for ``url``, with the URL's user name and password if it has them."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique(prefix))
    parts = urlsplit(url)
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    return client


def mqtt_publish(url: str, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
    """Publish and wait until the broker has it (PUBACK for QoS 1)."""
    client = mqtt_client(url, "pub")
    client.connect(*mqtt_address(url))
    client.loop_start()
    try:
        client.publish(topic, payload, qos, retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def apublish(url: str, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
    await asyncio.to_thread(mqtt_publish, url, topic, payload, qos, retain)


class MqttListener:
    """A subscriber collecting what arrives on a topic, ready once the broker has acknowledged it."""

    def __init__(self, url: str, topic: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._arrived = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt_client(url, "sub")
        self.client.on_connect = lambda client, *_: client.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(*mqtt_address(url))
        self.client.loop_start()
        assert subscribed.wait(10), f"no SUBACK for {topic}"

    def _on_message(self, client, userdata, message) -> None:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    def wait(self, count: int = 1, timeout: float = 10) -> list[paho.MQTTMessage]:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.messages) >= count, timeout), (
                f"{len(self.messages)} of {count} messages arrived"
            )
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# SMTP


def build_mail(to: str, subject: str = "Hello", body: str = "Body", sender: str = "alice@example.com") -> str:
    headers = f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
    return f"{headers}Message-ID: <{uuid.uuid4().hex}@example.com>\r\n\r\n{body}\r\n"


def smtp_send(port: int, sender: str, recipients: list[str], content: str | bytes) -> dict:
    """Send one mail; the per-recipient refusals (empty when all accepted). Raises on a refused DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail(sender, recipients, content)


async def asmtp(port: int, sender: str, recipients: list[str], content: str | bytes) -> dict:
    return await asyncio.to_thread(smtp_send, port, sender, recipients, content)


def prepare_gateway(directory: Path, mqtt_url: str, **settings: Any) -> Gateway:
    """Ports, settings and a migrated database (SQLite in ``directory`` unless ``DATABASE_URL`` is given)
    for a gateway, not started yet."""
    gateway = Gateway(free_port(), free_port(), mqtt_url)
    defaults = {
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        # A node of its own: the adapter's persistent session is this gateway's, never resumed (with what the
        # broker queued for it meanwhile) by another test's gateway on a shared broker.
        "MQTT_NODE_NAME": unique("test-node"),
    }
    gateway.env = gateway_env(
        HTTP_PORT=gateway.http_port, SMTP_PORT=gateway.smtp_port, MQTT_URL=mqtt_url, **{**defaults, **settings}
    )
    migrate(gateway.env)
    return gateway


def start_gateway(gateway: Gateway) -> Gateway:
    """``rungateway`` in its own process, returned once subscribed; stop it with ``gateway.process.stop()``."""
    gateway.process = Process(manage("rungateway"), env=gateway.env).start()
    try:
        gateway.process.wait_for("MQTT subscribed")
        gateway.process.wait_for("Quit with Ctrl-C.")  # the whole banner is out (it may come after)
    except AssertionError:
        gateway.process.kill()
        raise
    return gateway


def launch_gateway(directory: Path, mqtt_url: str, **settings: Any) -> Gateway:
    """A fresh gateway running in its own process (see ``prepare_gateway`` and ``start_gateway``)."""
    return start_gateway(prepare_gateway(directory, mqtt_url, **settings))


def stored_texts(database: Path | str, room: str) -> list[str]:
    """A room's message texts, in id order, read straight from a gateway's SQLite file."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT text FROM gateway_message JOIN gateway_room ON gateway_room.id = room_id WHERE name = ?"
            " ORDER BY seq",
            (room,),
        )
        return [text for (text,) in rows]


def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds, failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # polling, with a deadline


def record_group_sends(monkeypatch: Any, layer: Any) -> list[str]:
    """The groups ``layer`` is asked to send to from now on, in order (the sends still go through)."""
    sent_to: list[str] = []
    group_send = layer.group_send

    async def recorded(group: str, message: dict) -> None:
        sent_to.append(group)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", recorded)
    return sent_to
