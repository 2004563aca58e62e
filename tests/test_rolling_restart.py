"""A rolling restart under traffic: every process replaced in turn, nothing lost, nothing twice.

The deployment of docs/deploy.md on one fresh PostgreSQL database, this run's Redis prefix and a throwaway
Mosquitto: two daphnes (``deploy/systemd/gateway-asgi@.service``'s command line), two ``runmqtt`` in one
shared group (each with the unit's client id, ``gateway-<host>-mqtt-<n>``) and a ``runsmtp``. While
browsers read the room over WebSockets (spread over both daphnes; on a dropped connection each joins again
with ``?after=<the last id it saw>``, on its own daphne or, while that one is down, the other, as the room
page and nginx do), HTTP clients post, devices publish QoS 1 readings on ``rooms/<room>/in/<device>`` and a
mail server sends mail, each process in turn gets SIGTERM, must exit 0, and a new one takes its place and
answers before the next is replaced (docs/deploy.md, "Rolling restarts").

In the end every reader has every stored message exactly once, in id order (what it got in ``history`` on
each join and live, concatenated, is the room's history); every device reading and every mail is stored
once, and every HTTP post the client saw answered 201 too. A post answered 503, or whose connection was
refused, is sent again, as a client would; a post whose connection was cut before its answer would leave the
client unable to tell, so there must be none: a daphne told to stop answers the requests it has read.

Two smaller tests hold each process still at the moment that matters, a post or a mail waiting for the
database (its room's row locked) when SIGTERM comes: the daphne and ``runsmtp`` stop taking connections at
once, answer it once it is stored, and only then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import signal
import smtplib
import socket
import subprocess
import threading
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import psycopg
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from fanout.redis_layer import GatewayRedisChannelLayer
from gateway.adapters import LEFTOVER_SECONDS
from gateway.topics import PUBLISH_GROUP, out_topic
from protocols.server import cancel_and_wait
from tests.support import (
    ROOT,
    Gateway,
    Mosquitto,
    MqttListener,
    Process,
    build_mail,
    free_port,
    gateway_env,
    http_json,
    manage,
    migrate,
    mqtt_address,
    mqtt_client,
    smtp_send,
    unique,
    wait_until,
)
from tests.test_scale_out import REDIS_URL, asgi_unit_command
from tests.test_split_processes import database, wait_until_serving  # noqa: F401 (a fixture)

READERS_EACH = 3  # WebSocket readers whose own daphne is each of the two
POSTERS, POST_RATE = 2, 8.0  # HTTP clients, and posts a second each
DEVICES, DEVICE_RATE = 4, 5.0  # devices, and QoS 1 readings a second each (under DEVICE_RATE's 20)
MAIL_RATE = 2.0  # mails a second
PROGRESS = 30  # messages stored between one replacement and the next (each new process serves traffic)
PACE = 0.05  # seconds between a client's tries after a refusal


@dataclass
class Tally:
    """What the traffic's clients sent and what became of it."""

    posted: list[str] = field(default_factory=list)  # HTTP posts answered 201
    retried: Counter = field(default_factory=Counter)  # why posts and mails were sent again
    cut: list[str] = field(default_factory=list)  # HTTP posts whose connection closed without an answer
    published: list[str] = field(default_factory=list)  # device readings the broker acknowledged
    mailed: list[str] = field(default_factory=list)  # mails answered 250
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str) -> None:
        with self.lock:
            self.retried[what] += 1


class Paced(threading.Thread):
    """Calls ``act(n)`` for n = 0, 1, 2… at ``rate`` a second until stopped (then finishes the one under way)."""

    def __init__(self, act, rate: float) -> None:
        super().__init__(daemon=True)
        self.act, self.interval = act, 1 / rate
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        start = time.monotonic()
        try:
            for n in itertools.count():
                if self.stopping.is_set():
                    return
                self.act(n)
                # Pacing the traffic at its rate, not waiting for anything.
                self.stopping.wait(max(0.0, start + (n + 1) * self.interval - time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), "a traffic thread did not finish"
        if self.error is not None:
            raise self.error


def post_once(ports: list[int], room: str, text: str, tally: Tally) -> None:
    """POST until answered 201: a 503, or a refused connection, is tried again (on the other daphne)."""
    for attempt in itertools.count():
        port = ports[attempt % len(ports)]
        try:
            status, body = http_json("POST", f"http://127.0.0.1:{port}/api/rooms/{room}/messages", {"message": text})
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                raise
            tally.note("post: connection refused")
        except (http.client.RemoteDisconnected, ConnectionResetError, TimeoutError) as exc:
            with tally.lock:  # sent, and no answer: the client cannot tell whether it was stored
                tally.cut.append(f"{text}: {exc!r}")
            return
        else:
            if status == 201:
                assert body["message"] == text, body
                with tally.lock:
                    tally.posted.append(text)
                return
            assert status == 503, (status, body)
            tally.note("post: 503")
        assert attempt < 200, f"{text} never posted"
        time.sleep(PACE)  # pacing the retries


def mail_once(port: int, room: str, k: int, tally: Tally) -> None:
    """Send mail ``k`` until answered 250, the same message (its Message-ID) each time, as a mail server
    retries: a temporary failure (4xx), a refused or dropped connection mean "later"."""
    subject = f"mail {k}"
    content = build_mail(f"{room}@localhost", subject, f"body {k}", sender="carol@example.com")
    for attempt in itertools.count():
        try:
            refused = hand_over(port, f"{room}@localhost", content)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            assert all(400 <= code < 500 for code in codes), exc.recipients
            tally.note(f"mail: RCPT {sorted(codes)}")
        except smtplib.SMTPResponseException as exc:
            assert 400 <= exc.smtp_code < 500, exc
            tally.note(f"mail: {exc.smtp_code}")
        except (smtplib.SMTPServerDisconnected, ConnectionRefusedError, ConnectionResetError) as exc:
            tally.note(f"mail: {type(exc).__name__}")
        else:
            assert refused == {}, refused
            with tally.lock:
                tally.mailed.append(f"{subject}\n\nbody {k}")
            return
        assert attempt < 200, f"{subject} never accepted"
        time.sleep(PACE)  # a mail server's retry, much sped up


def hand_over(port: int, to: str, content: str) -> dict:
    """One mail from carol@example.com, as a mail server hands it over: its per-recipient refusals once
    DATA is answered 250 (what comes after, a 421 to QUIT from a server stopping, changes nothing)."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        return client.sendmail("carol@example.com", [to], content)
    finally:
        client.close()


class Device:
    """A device on its own topic, publishing QoS 1 readings; half of them name each reading with an
    ``id`` (the device's idempotency key), half rely on the broker's DUP flag for a redelivery."""

    def __init__(self, url: str, room: str, name: str, keyed: bool, tally: Tally) -> None:
        self.topic, self.name, self.keyed, self.tally = f"rooms/{room}/in/{name}", name, keyed, tally
        self.client = mqtt_client(url, name)
        self.client.connect(*mqtt_address(url))
        self.client.loop_start()
        self.sent: list[tuple[str, paho.MQTTMessageInfo]] = []

    def publish(self, k: int) -> None:
        text = f"{self.name} reading {k}"
        payload = {"message": text, **({"id": f"{self.name}-{k}"} if self.keyed else {})}
        info = self.client.publish(self.topic, json.dumps(payload), qos=1)
        assert info.rc == paho.MQTT_ERR_SUCCESS, info.rc
        self.sent.append((text, info))

    def close(self) -> None:
        try:
            for text, info in self.sent:
                info.wait_for_publish(20)  # the broker has it
                self.tally.published.append(text)
        finally:
            self.client.disconnect()
            self.client.loop_stop()


class Reader:
    """A browser reading the room: every ``message`` object it was sent (in ``history`` or live), in the
    order it came. When its connection drops it joins again with ``?after=<last id>``: on its own daphne,
    or while that one is down the other."""

    def __init__(self, ports: list[int], room: str) -> None:
        self.ports, self.room = ports, room
        self.messages: list[dict] = []
        self.joins = Counter()  # port -> joins
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self.run())

    @property
    def last(self) -> int:
        return self.messages[-1]["id"] if self.messages else 0

    async def run(self) -> None:
        for attempt in itertools.count():
            port = self.ports[attempt % len(self.ports)]
            after = f"?after={self.last}" if self.messages else ""
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/{self.room}/{after}", open_timeout=5)
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                await asyncio.sleep(PACE)  # pacing the reconnections
                continue
            self.joins[port] += 1
            with contextlib.suppress(websockets.ConnectionClosed):
                async with ws:
                    async for frame in ws:
                        event = json.loads(frame)
                        assert event["type"] != "error", event
                        arrived = event["messages"] if event["type"] == "history" else [event]
                        if event["type"] in ("history", "message"):
                            async with self.changed:
                                self.messages.extend(arrived)
                                self.changed.notify_all()

    async def wait_for(self, last_id: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: self.last >= last_id)


def stored(ports: list[int], room: str) -> list[dict]:
    """The room's whole history, oldest first, paged from the first daphne that answers."""
    messages: list[dict] = []
    while True:
        after = messages[-1]["id"] if messages else 0
        url = f"http://127.0.0.1:{ports[0]}/api/rooms/{room}/messages?after={after}&limit=500"
        status, body = http_json("GET", url)
        assert status == 200, body
        if not body["messages"]:
            return messages
        messages += body["messages"]


SETUP = """
from gateway.models import Device, Room
room = Room.objects.create(name={room!r}, public=True, email_open=True)
for name in {devices!r}:
    device = Device(name=name); device.set_password("unused: the test broker is open"); device.save()
    device.rooms.add(room)
"""


@pytest.fixture
def broker():
    """A throwaway Mosquitto that keeps what an absent adapter's session is owed."""
    broker = Mosquitto(config="allow_anonymous true\nmax_queued_messages 100000").start()
    yield broker
    broker.kill()


class Cluster:
    """The five processes of docs/deploy.md on one set of settings; each can be replaced."""

    def __init__(self, env: dict[str, str], node: str) -> None:
        self.env, self.node = env, node
        self.asgi_ports = [free_port(), free_port()]
        self.smtp_port = int(env["SMTP_PORT"])
        self.processes: dict[str, Process] = {}
        self.retired: list[tuple[str, Process, int | str]] = []

    def command(self, name: str) -> Process:
        kind, _, number = name.partition("-")
        if kind == "asgi":
            return Process(asgi_unit_command(self.asgi_ports[int(number) - 1]), env=self.env)
        if kind == "mqtt":  # deploy/systemd/gateway-mqtt@.service: MQTT_CLIENT_ID=gateway-%H-mqtt-%i
            return Process(manage("runmqtt"), env={**self.env, "MQTT_CLIENT_ID": self.client_id(name)})
        return Process(manage("runsmtp"), env=self.env)

    def client_id(self, name: str) -> str:
        return f"gateway-{self.node}-{name}"

    def start(self, name: str) -> Process:
        self.processes[name] = process = self.command(name).start()
        return process

    def wait_ready(self, name: str) -> None:
        """Until the process answers: /healthz 200 (daphne), subscribed (runmqtt), listening (runsmtp)."""
        process = self.processes[name]
        if name.startswith("asgi"):
            port = self.asgi_ports[int(name[-1]) - 1]
            wait_until_serving(Gateway(port, self.smtp_port, self.env["MQTT_URL"]), process)
            return
        if name.startswith("mqtt"):
            process.wait_for("MQTT subscribed")
        process.wait_for("Quit with Ctrl-C.")

    def replace(self, name: str) -> None:
        """SIGTERM, its exit, a new one, answering."""
        old = self.processes[name]
        try:
            code: int | str = old.stop(timeout=30)
        except AssertionError as exc:
            code = str(exc)
        self.retired.append((name, old, code))
        self.start(name)
        self.wait_ready(name)

    def stop_all(self) -> None:
        for name, process in self.processes.items():
            try:
                code: int | str = process.stop(timeout=30)
            except AssertionError as exc:
                code = str(exc)
            self.retired.append((name, process, code))

    def report(self) -> str:
        return "\n\n".join(f"--- {name} (exit {code}) ---\n{process.output}" for name, process, code in self.retired)


async def test_a_rolling_restart_under_traffic_loses_and_repeats_nothing(database, redis_host, broker, tmp_path):  # noqa: F811
    room, node = unique("rolling"), unique("host")
    devices = [f"sensor-{n}" for n in range(DEVICES)]
    env = gateway_env(
        DATABASE_URL=database,
        REDIS_URL=REDIS_URL,
        REDIS_SENTINELS="",
        CHANNEL_LAYER_PREFIX=unique("gwroll"),
        MQTT_URL=broker.url,
        MQTT_SHARED_GROUP=unique("gateway"),
        SMTP_PORT=free_port(),
        MAIL_SENDER_RATE=100,  # one test sender mails faster than a person
        MEDIA_ROOT=tmp_path / "media",
    )
    migrate(env)
    subprocess.run(manage("shell", "-c", SETUP.format(room=room, devices=devices)), cwd=ROOT, env=env, check=True)
    cluster = Cluster(env, node)
    order = ["asgi-1", "asgi-2", "mqtt-1", "mqtt-2", "smtp"]
    tally = Tally()
    traffic: list[Paced] = []
    device_clients: list[Device] = []
    readers: list[Reader] = []
    try:
        for name in order:
            cluster.start(name)
        for name in order:
            await asyncio.to_thread(cluster.wait_ready, name)
        one, two = cluster.asgi_ports
        for home in (one, two):
            readers += [Reader([home, one if home == two else two], room) for _ in range(READERS_EACH)]
        async with asyncio.timeout(20):
            while sum(reader.joins.total() for reader in readers) < len(readers):
                await asyncio.sleep(PACE)  # polling the readers' joins, with a deadline

        for p in range(POSTERS):
            ports = cluster.asgi_ports[p % 2 :] + cluster.asgi_ports[: p % 2]  # as nginx would spread them
            traffic.append(Paced(lambda n, p=p, ports=ports: post_once(ports, room, f"post {p}.{n}", tally), POST_RATE))
        for n, name in enumerate(devices):
            device_clients.append(device := Device(broker.url, room, name, keyed=n % 2 == 0, tally=tally))
            traffic.append(Paced(device.publish, DEVICE_RATE))
        traffic.append(Paced(lambda k: mail_once(cluster.smtp_port, room, k, tally), MAIL_RATE))
        for thread in traffic:
            thread.start()

        # Each process in turn, once traffic has gone through the previous one's replacement.
        watcher = readers[0]
        for name in order:
            await watcher.wait_for(watcher.last + PROGRESS)
            await asyncio.to_thread(cluster.replace, name)
        await watcher.wait_for(watcher.last + PROGRESS)

        for thread in traffic:
            await asyncio.to_thread(thread.finish)
        for device in device_clients:
            await asyncio.to_thread(device.close)
        expected_count = len(tally.posted) + len(tally.published) + len(tally.mailed)
        # Everything the clients were told is taken gets stored; then a last post fences it off.
        async with asyncio.timeout(30):
            while len(await asyncio.to_thread(stored, cluster.asgi_ports, room)) < expected_count:
                await asyncio.sleep(0.1)  # polling the history, with a deadline
        status, fence = await asyncio.to_thread(
            http_json, "POST", f"http://127.0.0.1:{one}/api/rooms/{room}/messages", {"message": "fence"}
        )
        assert status == 201, fence
        for reader in readers:
            await reader.wait_for(fence["id"])
        history = await asyncio.to_thread(stored, cluster.asgi_ports, room)
    finally:
        for thread in traffic:
            thread.stopping.set()
        for device in device_clients:
            with contextlib.suppress(Exception):
                device.client.loop_stop()
        for reader in readers:
            reader.task.cancel()
        await asyncio.to_thread(cluster.stop_all)
        with redis.Redis(*redis_host) as client:  # this run's keys only
            for key in client.scan_iter(match=f"{env['CHANNEL_LAYER_PREFIX']}*"):
                client.delete(key)
    report = cluster.report()

    # Every process stopped cleanly on SIGTERM, and each adapter took its session back.
    assert [code for _, _, code in cluster.retired] == [0] * len(cluster.retired), report
    for name in ("mqtt-1", "mqtt-2"):
        [old, new] = [process for retired, process, _ in cluster.retired if retired == name]
        assert f"as {cluster.client_id(name)} (" in old.output and "resumed its session" in new.output, report

    # No post was left without an answer; every one the client saw taken is stored once, and nothing else.
    assert tally.cut == [], f"posts cut off without an answer: {tally.cut}\n{report}"
    texts = Counter(message["message"] for message in history)
    assert [m["id"] for m in history] == list(range(1, len(history) + 1))
    assert texts.most_common(1)[0][1] == 1, [text for text, count in texts.items() if count > 1]
    assert set(texts) == {*tally.posted, *tally.published, *tally.mailed, "fence"}
    assert Counter(m["source"] for m in history) == {
        "http": len(tally.posted) + 1,
        "mqtt": len(tally.published),
        "email": len(tally.mailed),
    }
    # Every reader: exactly the history, once, in id order, across all its joins.
    for number, reader in enumerate(readers):
        assert [m["id"] for m in reader.messages] == [m["id"] for m in history], f"reader {number}"
        assert reader.messages == history, f"reader {number}"
    # The restarts were felt: readers joined again, on both daphnes; clients were refused and retried.
    joins = Counter()
    for reader in readers:
        joins += reader.joins
    assert joins[one] > READERS_EACH and joins[two] > READERS_EACH, joins
    print(f"{len(history)} messages, joins {dict(joins)}, retries {dict(tally.retried)}")


RELAY_STOPS = 6  # runmqtt started and told to stop, each time while its relay is busy


async def test_runmqtt_ends_at_once_on_sigterm_while_its_relay_is_busy(database, redis_host, broker, tmp_path):  # noqa: F811
    """SIGTERM while runmqtt's relay publishes what the group is sent (as daphnes' posts reach it) and a
    device publishes QoS 1: it exits 0 well within ``LEFTOVER_SECONDS``, with no task left behind. Its
    relay's cancellation could be lost in redis-py's send of a command (Python 3.11's ``wait_for``):
    then the relay went on, and the process waited for it (protocols.server.cancel_and_wait)."""
    room, prefix = unique("relay"), unique("gwrelay")
    env = gateway_env(
        DATABASE_URL=database,
        REDIS_URL=REDIS_URL,
        REDIS_SENTINELS="",
        CHANNEL_LAYER_PREFIX=prefix,
        MQTT_URL=broker.url,
        MQTT_CLIENT_ID=unique("gateway-relay"),
        MEDIA_ROOT=tmp_path / "media",
    )
    migrate(env)
    subprocess.run(manage("shell", "-c", SETUP.format(room=room, devices=["sensor"])), cwd=ROOT, env=env, check=True)
    layer = GatewayRedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    listener = MqttListener(broker.url, out_topic(room))
    device = Device(broker.url, room, "sensor", keyed=True, tally=Tally())
    readings = Paced(device.publish, DEVICE_RATE)

    feeding = [True]

    async def feed_the_relay() -> None:
        n = 0
        while feeding:  # a cancellation alone can be lost in a layer call (cancel_and_wait)
            n += 1
            message = {"topic": out_topic(room), "payload": f"relayed {n}", "qos": 1}
            await layer.group_send(
                PUBLISH_GROUP, {"type": "mqtt.publish.many", "messages": [message], "key": f"{room}:{n}"}
            )
            await asyncio.sleep(0.005)  # pacing the group's traffic

    feeder = asyncio.get_running_loop().create_task(feed_the_relay())
    readings.start()
    stops: list[tuple[int | None, float, str]] = []
    try:
        for _ in range(RELAY_STOPS):
            runmqtt = Process(manage("runmqtt"), env=env).start()
            try:
                await asyncio.to_thread(runmqtt.wait_for, "Quit with Ctrl-C.")
                await asyncio.to_thread(runmqtt.wait_for, "MQTT subscribed")
                await asyncio.to_thread(listener.wait, len(listener.messages) + 20)  # the relay is at work
                told = time.monotonic()
                runmqtt.popen.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(runmqtt.popen.wait, 30)
                stops.append((code, time.monotonic() - told, runmqtt.output))
            finally:
                runmqtt.kill()
    finally:
        feeding.clear()
        await cancel_and_wait([feeder], 5)
        readings.finish()
        device.close()
        listener.close()
        with redis.Redis(*redis_host) as client:  # this run's keys only
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
    for code, took, output in stops:
        assert code == 0 and took < LEFTOVER_SECONDS - 1, f"exit {code} after {took:.1f}s:\n{output}"
        assert "did not end" not in output and "still running" not in output, output


STATIC = "/static/gateway/chat.css"  # served off the database thread (DEBUG: Django's static files handler)


def test_a_daphne_told_to_stop_answers_the_posts_it_has_read(database):  # noqa: F811
    """SIGTERM while a post waits for the database: the daphne stops taking connections at once (a client
    goes to another), still serves a kept-alive connection (saying ``Connection: close``), answers the post
    once it is stored, and only then exits (0)."""
    room, port = unique("drain"), free_port()
    env = gateway_env(DATABASE_URL=database)
    migrate(env)
    daphne = Process(asgi_unit_command(port), env=env).start()
    url = f"http://127.0.0.1:{port}/api/rooms/{room}/messages"
    try:
        wait_until_serving(Gateway(port, 0, ""), daphne)
        assert http_json("POST", url, {"message": "first"})[0] == 201
        reader = connect(f"ws://127.0.0.1:{port}/ws/chat/{room}/", origin=f"http://127.0.0.1:{port}", open_timeout=10)
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a proxy's kept-alive connection
        kept.request("GET", STATIC)
        assert kept.getresponse().read() and kept.sock is not None
        with psycopg.connect(database) as holder, psycopg.connect(database, autocommit=True) as observer:
            holder.execute("SELECT 1 FROM gateway_room WHERE name = %s FOR UPDATE", [room])  # ids wait for it
            answer: list = []

            def post() -> None:
                try:
                    answer.append(http_json("POST", url, {"message": "held"}))
                except OSError as exc:  # RemoteDisconnected: cut off without an answer
                    answer.append(exc)

            poster = threading.Thread(target=post)
            poster.start()
            wait_for_a_lock(observer, "the post never reached the database")
            daphne.popen.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses(port), 10, "daphne kept taking connections after SIGTERM")
            assert daphne.popen.poll() is None, "daphne exited with a post unanswered"
            assert close_code(reader) == 1012  # told at once, while the post is still held
            # Still served, and told not to come again (a request that needs no database: the post holds
            # the process's database thread).
            kept.request("GET", STATIC)
            response = kept.getresponse()
            assert (response.status, response.getheader("Connection")) == (200, "close"), response.getheaders()
            response.read()
            kept.close()
            holder.commit()
            poster.join(10)
        assert daphne.popen.wait(20) == 0, daphne.output  # on the one SIGTERM
    finally:
        daphne.kill()
    [result] = answer
    assert not isinstance(result, Exception), f"the post was cut off: {result!r}\n{daphne.output}"
    assert (result[0], result[1]["message"]) == (201, "held"), result
    with psycopg.connect(database) as connection:
        texts = connection.execute(
            "SELECT text FROM gateway_message JOIN gateway_room ON gateway_room.id = room_id"
            " WHERE name = %s ORDER BY seq",
            [room],
        ).fetchall()
    assert texts == [("first",), ("held",)]


def wait_for_a_lock(observer: psycopg.Connection, failure: str) -> None:
    """Until one session of this database waits for a lock (the held room row)."""
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    wait_until(lambda: observer.execute(waiting).fetchone()[0] == 1, 10, failure)


def close_code(reader: ClientConnection) -> int | None:
    """The code of the close frame the server sends ``reader`` next (its messages before it skipped)."""
    try:
        while True:
            reader.recv(timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_runsmtp_told_to_stop_answers_the_mail_in_hand_and_says_421_to_the_rest(database):  # noqa: F811
    """SIGTERM while a mail waits for the database: runsmtp takes no new sessions, gives that mail its
    answer (250), says 421 to a session that is only connected, and exits 0."""
    room, port = unique("drain"), free_port()
    env = gateway_env(DATABASE_URL=database, SMTP_PORT=port, MAIL_SENDER_RATE=100)
    migrate(env)
    runsmtp = Process(manage("runsmtp"), env=env).start()
    to = f"{room}@localhost"
    try:
        runsmtp.wait_for("Quit with Ctrl-C.")
        assert smtp_send(port, "carol@example.com", [to], build_mail(to, "first", sender="carol@example.com")) == {}
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle_lines = idle.makefile("rb")
        assert idle_lines.readline().startswith(b"220")
        with psycopg.connect(database) as holder, psycopg.connect(database, autocommit=True) as observer:
            holder.execute("SELECT 1 FROM gateway_room WHERE name = %s FOR UPDATE", [room])  # ids wait for it
            answer: list = []

            def send() -> None:
                mail = build_mail(to, "held", sender="carol@example.com")
                try:
                    answer.append(hand_over(port, to, mail))
                except (smtplib.SMTPException, OSError) as exc:
                    answer.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            wait_for_a_lock(observer, "the mail never reached the database")
            runsmtp.popen.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses(port), 10, "runsmtp kept taking connections after SIGTERM")
            said = idle_lines.readline()
            assert runsmtp.popen.poll() is None, "runsmtp exited with a mail unanswered"
            holder.commit()
            sender.join(10)
        idle.close()
        assert runsmtp.popen.wait(20) == 0, runsmtp.output  # on the one SIGTERM
    finally:
        runsmtp.kill()
    assert said.startswith(b"421 4.3.2"), said
    assert answer == [{}], f"the mail was not accepted: {answer}\n{runsmtp.output}"
    with psycopg.connect(database) as connection:
        texts = connection.execute(
            "SELECT text FROM gateway_message JOIN gateway_room ON gateway_room.id = room_id"
            " WHERE name = %s ORDER BY seq",
            [room],
        ).fetchall()
    assert texts == [("first\n\nBody",), ("held\n\nBody",)]
