"""The scenarios: room fan-out, ingest, idle connections and scale-out, each returning plain figures.

Measurement rules shared by all of them:

- Server CPU is user + system time of every server process (psutil), taken over a steady window,
  not over setup; the clients' CPU is taken over the same window so a saturated client is seen.
- Load is offered open-loop, at a fixed pace whatever the server does (as real senders do); the
  sustained rate is the highest step of a staircase of such loads that the server kept up with,
  every message delivered once.
- Every phase ends by waiting until each subscriber has had every message (or a deadline), then
  each connection is checked: each message once, ids increasing, the checksum right.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from . import servers
from .clients import Report, SubscriberPool, bench_text, checksum_of
from .config import Sizes
from .publishers import (
    EMAIL,
    HTTP,
    MQTT,
    WEBSOCKET,
    HttpClient,
    MqttPublisher,
    WsPublisher,
    last_id,
    send_mails,
    stored_texts,
)

logger = logging.getLogger("bench")
SATURATED = 0.9  # a client process using this much of a core may be what limits the figure

FANOUT_ROOM, INGEST_ROOM, SCALE_ROOM, IDLE_PREFIX = "bench_fanout", "bench_ingest", "bench_scale", "bench_idle"
SHARED_GROUP = "bench"  # the gateway's runmqtt processes: MQTT_SHARED_GROUP


@dataclass
class Run:
    """What every scenario shares: sizes, where logs go, what to undo, the services, the warnings."""

    sizes: Sizes
    log_dir: Path
    cleanup: servers.Cleanup
    redis_url: str = ""
    gateway_env: dict[str, str] = field(default_factory=dict)
    mqtt_url: str = ""
    warnings: list[str] = field(default_factory=list)
    sequence: Any = field(default_factory=itertools.count)

    def warn(self, text: str) -> None:
        logger.warning(text)
        self.warnings.append(text)


# Ways in


class Ingress:
    """How a target takes bench messages in; ``send`` returns once the message was accepted."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.refused = 0  # messages the server answered with an error: never stored, so never delivered

    def publisher(self, sequence: int) -> int:
        """Which way in carries message ``sequence`` (decided up front: the checksum needs it)."""
        raise NotImplementedError

    async def send(self, sequence: int) -> None:
        raise NotImplementedError

    async def flush(self, timeout: float) -> None:
        """Wait until everything sent was accepted (MQTT: the broker's PUBACKs)."""

    def close(self) -> None:
        pass


class GatewayIngress(Ingress):
    """Alternately ``POST /api/rooms/<room>/messages`` (over the given servers in turn) and an MQTT
    publish to ``rooms/<room>/in``: both ways in that the issue names."""

    def __init__(self, room: str, http_ports: list[int], mqtt_url: str, ways: str, connections: int = 32) -> None:
        super().__init__()
        if ways not in ("http+mqtt", "http", "mqtt"):
            raise ValueError(f"ways in: http+mqtt, http or mqtt, not {ways!r}")
        self.room, self.ways = room, ways
        self.https = [HttpClient(port, connections) for port in http_ports]
        self.mqtt = MqttPublisher(mqtt_url)
        self.topic = f"rooms/{room}/in"
        self.posts = 0  # HTTP posts so far: they go to each server in turn

    def publisher(self, sequence: int) -> int:
        if self.ways == "http+mqtt":
            return MQTT if sequence % 2 else HTTP
        return MQTT if self.ways == "mqtt" else HTTP

    async def send(self, sequence: int) -> None:
        if self.publisher(sequence) == MQTT:
            self.mqtt.publish(self.topic, bench_text(MQTT, sequence))
            return
        http = self.https[self.posts % len(self.https)]
        self.posts += 1
        status, body = await http.request(
            "POST", f"/api/rooms/{self.room}/messages", {"message": bench_text(HTTP, sequence)}
        )
        if status != 201:
            self.refused += 1
            self.errors.append(f"POST {status}: {_brief(body)}")

    async def flush(self, timeout: float) -> None:
        acked = await asyncio.to_thread(self.mqtt.wait_acked, timeout)
        if acked < self.mqtt.published:
            self.errors.append(f"the broker acknowledged {acked} of {self.mqtt.published} MQTT messages")

    def close(self) -> None:
        self.mqtt.close()
        for http in self.https:
            http.close()


def _brief(body: object) -> str:
    """An error answer in a few words (Django's 500 page is HTML: its title)."""
    text = str(body)
    if "<title>" in text:
        text = text.split("<title>", 1)[1].split("</title>", 1)[0]
    return " ".join(text.split())[:120]


class BaselineIngress(Ingress):
    """The tutorial has no HTTP API: messages enter as WebSocket frames from a publisher connection."""

    def __init__(self, connection: WsPublisher) -> None:
        super().__init__()
        self.connection = connection

    def publisher(self, sequence: int) -> int:
        return WEBSOCKET

    async def send(self, sequence: int) -> None:
        self.connection.send(bench_text(WEBSOCKET, sequence))

    def close(self) -> None:
        self.connection.close()


# Measuring


class Window:
    """CPU of servers, clients, this process and Redis, and deliveries, between two moments."""

    def __init__(self, server_pids: dict[str, int], pool: SubscriberPool) -> None:
        self.names = {pid: name for name, pid in server_pids.items()}
        self.server_pids, self.pool = list(server_pids.values()), pool
        # The machine's Redis and PostgreSQL serve others too: their CPU is for information only.
        self.redis_pids = servers.named_pids("redis-server")
        self.database_pids = servers.named_pids("postgres")
        self.me = psutil.Process()

    def _take(self) -> dict:
        mine = self.me.cpu_times()
        return {
            "at": time.monotonic(),
            "server": servers.cpu_seconds(self.server_pids),
            "servers": servers.cpu_by_pid(self.server_pids),
            "clients": servers.cpu_by_pid(self.pool.pids),
            "publisher": mine.user + mine.system,
            "redis": servers.cpu_seconds(self.redis_pids),
            "database": servers.cpu_seconds(self.database_pids),
            "deliveries": self.pool.deliveries(),
        }

    def start(self) -> None:
        self.begin = self._take()

    def stop(self) -> dict:
        end, begin = self._take(), self.begin
        seconds = end["at"] - begin["at"]
        deliveries = end["deliveries"] - begin["deliveries"]
        clients = {pid: (end["clients"][pid] - begin["clients"][pid]) / seconds for pid in begin["clients"]}
        each = {self.names[pid]: (end["servers"][pid] - begin["servers"][pid]) / seconds for pid in begin["servers"]}
        return {
            "seconds": seconds,
            "deliveries": deliveries,
            "deliveries_per_s": deliveries / seconds,
            "server_cpu_s": end["server"] - begin["server"],
            "server_cores": (end["server"] - begin["server"]) / seconds,
            "server_cores_each": each,
            "cpu_us_per_delivery": 1e6 * (end["server"] - begin["server"]) / deliveries if deliveries else None,
            "redis_cpu_s": end["redis"] - begin["redis"],
            "database_cpu_s": end["database"] - begin["database"],
            "redis_cpu_us_per_delivery": 1e6 * (end["redis"] - begin["redis"]) / deliveries if deliveries else None,
            "database_cpu_us_per_delivery": (
                1e6 * (end["database"] - begin["database"]) / deliveries if deliveries else None
            ),
            "client_cores": clients,
            "client_cores_max": max(clients.values(), default=0.0),
            "publisher_cores": (end["publisher"] - begin["publisher"]) / seconds,
        }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_ms(values: list[float]) -> dict:
    return {
        "samples": len(values),
        **{f"p{int(q * 100)}": (v * 1000 if (v := percentile(values, q)) is not None else None) for q in (0.5, 0.99)},
        "max": max(values) * 1000 if values else None,
    }


def check_clients(run: Run, figures: dict, what: str) -> None:
    if figures["client_cores_max"] >= SATURATED:
        run.warn(f"{what}: a subscriber process used {figures['client_cores_max']:.0%} of a core: it may be the limit")
    if figures["publisher_cores"] >= SATURATED:
        run.warn(f"{what}: the publisher used {figures['publisher_cores']:.0%} of a core: it may be the limit")


async def wait_received(pool: SubscriberPool, count: int, timeout: float) -> float:
    """Until every connection had ``count`` messages (or the deadline); the seconds it took."""
    started = time.monotonic()
    while pool.fewest_received() < count and time.monotonic() - started < timeout:
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def verdict(report: Report, published: list[tuple[int, int]], errors: list[str]) -> dict:
    return {
        "published": len(published),
        "subscribers": report.subscribers,
        "complete": report.complete,
        "missing": report.missing,
        "extra": report.extra,
        "disorder": report.disorder,
        "checksum_mismatches": report.checksum_mismatches,
        "closed": report.closed,
        "errors": errors[:5],
        "lossless": report.lossless and not errors and report.closed == 0,
    }


async def open_loop(
    run: Run, ingress: Ingress, pool: SubscriberPool, server_pids: dict[str, int], rate: float, duration: float
) -> dict:
    """Offer ``rate`` deliveries a second for ``duration`` seconds, whatever the server does, then wait until
    everyone has everything (or the deadline) and check it. ``kept_up``: the last message reached everyone
    within ``KEEP_UP`` seconds of its publication, and nothing was lost."""
    sizes = run.sizes
    subscribers = pool.connected
    per_second = rate / subscribers  # messages a second
    count = max(1, round(per_second * duration))
    pool.reset()
    loop = asyncio.get_running_loop()
    published: list[tuple[int, int]] = []
    tasks = []
    window = Window(server_pids, pool)
    window.start()
    start = loop.time() + 0.05
    for number in range(count):
        await asyncio.sleep(max(0.0, start + number / per_second - loop.time()))
        sequence = next(run.sequence)
        published.append((ingress.publisher(sequence), sequence))
        tasks.append(asyncio.create_task(ingress.send(sequence)))
    offered_s = loop.time() - start + 1 / per_second  # as long as the publisher took, at the pace asked
    last_publish = time.monotonic()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            ingress.refused += 1
            ingress.errors.append(repr(outcome))
    await ingress.flush(sizes.drain_timeout)
    await wait_received(pool, len(published) - ingress.refused, sizes.drain_timeout)
    drain = time.monotonic() - last_publish  # how far behind the server was when the load stopped
    figures = window.stop()
    report = pool.report(len(published), sum(checksum_of(*message) for message in published))
    check = verdict(report, published, ingress.errors)
    check["refused"] = ingress.refused  # counted as missing too: a sender whose post failed lost it
    ingress.errors.clear()
    ingress.refused = 0
    figures.update(
        offered_deliveries_per_s=rate,
        offered_messages_per_s=per_second,
        achieved_deliveries_per_s=len(published) * subscribers / offered_s,
        drain_s=drain,
        kept_up=drain <= KEEP_UP and check["lossless"],
        latency_ms=latency_ms(report.latencies),
        check=check,
    )
    return figures


def warn_refused(run: Run, figures: dict, what: str) -> None:
    check = figures["check"]
    if check["refused"] or check["errors"]:
        run.warn(f"{what}: {check['refused']} messages refused by the server, e.g. {check['errors'][:1]}")


KEEP_UP = 1.0  # seconds: a server still delivering this long after the load stopped had fallen behind


async def staircase(run: Run, ingress: Ingress, pool: SubscriberPool, server_pids: dict[str, int], what: str) -> dict:
    """The highest offered load (deliveries a second) that is kept up with, every message delivered once.

    Open-loop steps of ``duration`` seconds from ``ramp_start``, each ``ramp_factor`` times the last,
    until one falls behind or loses a message; then ``ramp_refine`` steps bisecting (geometrically)
    between the last good one and the lowest bad one. The sustained figure, the CPU per delivery and
    the cores used are the best step's: the server near its limit, with its queues empty at the end.
    """
    sizes = run.sizes
    steps: list[dict] = []
    best: dict | None = None
    high: dict | None = None
    rate, failure = float(sizes.ramp_start), None
    while rate <= sizes.ramp_max:
        step = await open_loop(run, ingress, pool, server_pids, rate, sizes.duration)
        steps.append(step)
        logger.info(
            "%s: %s deliveries/s offered: %s (last message %.1fs after the last publish)",
            what,
            f"{rate:,.0f}",
            "kept up" if step["kept_up"] else "fell behind" if step["check"]["lossless"] else "LOST messages",
            step["drain_s"],
        )
        await asyncio.to_thread(servers.wait_until_idle, list(server_pids.values()))
        check_clients(run, step, what)
        warn_refused(run, step, f"{what} at {rate:,.0f} deliveries/s")
        if not step["kept_up"]:
            failure = step
            break
        best = step
        rate *= sizes.ramp_factor
    high = failure
    if best is None:  # the first step was too much already: down, step by step, until one is kept up
        rate = sizes.ramp_start / sizes.ramp_factor
        while best is None and rate >= sizes.ramp_min:
            step = await open_loop(run, ingress, pool, server_pids, rate, sizes.duration)
            steps.append(step)
            logger.info(
                "%s: %s deliveries/s offered: %s", what, f"{rate:,.0f}", "kept up" if step["kept_up"] else "not"
            )
            await asyncio.to_thread(servers.wait_until_idle, list(server_pids.values()))
            if step["kept_up"]:
                best = step
            else:
                high = step
            rate /= sizes.ramp_factor
    for _ in range(sizes.ramp_refine if best is not None and high is not None else 0):
        between = math.sqrt(best["offered_deliveries_per_s"] * high["offered_deliveries_per_s"])
        step = await open_loop(run, ingress, pool, server_pids, between, sizes.duration)
        steps.append(step)
        logger.info("%s: %s deliveries/s offered: %s", what, f"{between:,.0f}", "kept up" if step["kept_up"] else "not")
        await asyncio.to_thread(servers.wait_until_idle, list(server_pids.values()))
        if step["kept_up"]:
            best = step
        else:
            high = step
    if failure is None:
        run.warn(f"{what}: kept up with every step up to --ramp-max {sizes.ramp_max:,}: the limit is higher")
    return {
        "deliveries_per_s": best["achieved_deliveries_per_s"] if best else None,
        "cpu_us_per_delivery": best["cpu_us_per_delivery"] if best else None,
        "server_cores": best["server_cores"] if best else None,
        # every step up to the best one delivered every message once, in order
        "lossless": best is not None
        and all(
            s["check"]["lossless"] for s in steps if s["offered_deliveries_per_s"] <= best["offered_deliveries_per_s"]
        ),
        "refused": sum(step["check"]["refused"] for step in steps),  # HTTP errors: a server bug, not overload
        "first_failure": failure
        and {
            "offered_deliveries_per_s": failure["offered_deliveries_per_s"],
            "drain_s": failure["drain_s"],
            "check": failure["check"],
        },
        "steps": steps,
    }


async def fixed_load(
    run: Run, ingress: Ingress, pool: SubscriberPool, server_pids: dict[str, int], what: str, load: int
) -> dict:
    """Open loop at ``load`` deliveries a second: publish-to-deliver latency when not saturated."""
    sizes = run.sizes
    figures = await open_loop(run, ingress, pool, server_pids, load, sizes.latency_duration)
    check_clients(run, figures, what)
    warn_refused(run, figures, what)
    if figures["drain_s"] > KEEP_UP:
        run.warn(
            f"{what}: {load:,} deliveries/s is more than it sustains; the last message arrived "
            f"{figures['drain_s']:.1f}s after the last publish, so its latency grows with --latency-duration"
        )
    return figures


# Targets


@dataclass
class Target:
    """A server set to fan out from: where subscribers connect, which processes to measure."""

    name: str
    ws_ports: list[int]
    server_pids: dict[str, int]  # name: pid of every server process measured
    path: str = "/ws/chat/{room}/"  # where a reader connects
    topic: str | None = None  # an MQTT topic to subscribe to, over the WebSocket (subprotocol mqtt)


async def fanout(run: Run, target: Target, ingress: Ingress, room: str, *, latency: bool = True) -> dict:
    """One room, ``subscribers`` readers in client processes: join, then the sustained phase and (with
    ``latency``) the fixed-load phase."""
    sizes = run.sizes
    pool = SubscriberPool(sizes.client_processes)
    run.cleanup.add(f"{target.name} subscribers", pool.close)
    try:
        path, topic = target.path.format(room=room), () if target.topic is None else (target.topic,)
        paths = [
            ("127.0.0.1", target.ws_ports[n % len(target.ws_ports)], path, *topic) for n in range(sizes.subscribers)
        ]
        logger.info("%s: connecting %d subscribers to %s", target.name, sizes.subscribers, room)
        joined = await asyncio.to_thread(
            pool.connect, paths, sample_every=sizes.sample_every, concurrency=sizes.connect_concurrency
        )
        if joined["failed"]:
            raise RuntimeError(f"{joined['failed']} subscribers could not connect: {joined['errors']}")
        settle = await asyncio.to_thread(servers.wait_until_idle, list(target.server_pids.values()))
        logger.info("%s: joined in %.1fs, servers settled %.1fs later", target.name, joined["seconds"], settle)
        result: dict[str, Any] = {"subscribers": pool.connected, "join_s": joined["seconds"], "join_settle_s": settle}
        logger.info("%s: sustained load, steps of %.0fs from %s deliveries/s", target.name, sizes.duration,
                    f"{sizes.ramp_start:,}")  # fmt: skip
        result["sustained"] = await staircase(run, ingress, pool, target.server_pids, target.name)
        if latency:
            logger.info(
                "%s: latency at %d deliveries/s for %.0fs", target.name, sizes.latency_load, sizes.latency_duration
            )
            result["fixed_load"] = await fixed_load(
                run, ingress, pool, target.server_pids, f"{target.name} latency", sizes.latency_load
            )
            if target.name == "gateway" and sizes.latency_load_high:
                logger.info("%s: latency at %d deliveries/s", target.name, sizes.latency_load_high)
                result["fixed_load_high"] = await fixed_load(
                    run, ingress, pool, target.server_pids, f"{target.name} latency", sizes.latency_load_high
                )
    finally:
        await asyncio.to_thread(pool.close)
        ingress.close()
    result["leave_settle_s"] = await asyncio.to_thread(servers.wait_until_idle, list(target.server_pids.values()))
    return result


# The gateway's processes


class GatewayDeployment:
    """The scale-out shape from the README: daphne (one or more), runmqtt and runsmtp, sharing Redis
    and PostgreSQL. Its CPU is that of all these processes."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.daphnes: list[tuple[int, servers.ServerProcess]] = []
        self.smtp_port = servers.free_port()
        env = dict(run.gateway_env, SMTP_PORT=str(self.smtp_port))
        # In a shared-subscription group, alone until the ingest scenario adds members (each leaves the group
        # when stopped, so everything comes back to this one).
        env["MQTT_SHARED_GROUP"] = SHARED_GROUP
        self.env = env
        self.mqtt = servers.start_adapter("runmqtt", env, run.cleanup, run.log_dir, "MQTT subscribed")
        self.smtp = servers.start_adapter("runsmtp", env, run.cleanup, run.log_dir, "SMTP")
        self.add_daphne()

    def add_daphne(self) -> int:
        port, process = servers.start_gateway_daphne(
            f"daphne-{len(self.daphnes) + 1}", self.env, self.run.cleanup, self.run.log_dir
        )
        self.daphnes.append((port, process))
        return port

    @property
    def pids(self) -> dict[str, int]:
        processes = [process for _, process in self.daphnes] + [self.mqtt, self.smtp]
        return {process.name: process.pid for process in processes}

    @property
    def ports(self) -> list[int]:
        return [port for port, _ in self.daphnes]

    def stop(self) -> None:
        for _, process in self.daphnes:
            process.stop()
        self.mqtt.stop()
        self.smtp.stop()


async def gateway_fanout(run: Run, deployment: GatewayDeployment) -> dict:
    target = Target("gateway", deployment.ports[:1], deployment.pids)
    ingress = GatewayIngress(FANOUT_ROOM, deployment.ports[:1], run.mqtt_url, run.sizes.ways_in)
    return await fanout(run, target, ingress, FANOUT_ROOM)


async def baseline_fanout(run: Run) -> dict:
    prefix = run.gateway_env["CHANNEL_LAYER_PREFIX"] + "-baseline"
    port, process = servers.start_baseline_daphne("baseline", run.redis_url, prefix, run.cleanup, run.log_dir)
    try:
        publisher = WsPublisher(port, f"/ws/chat/{FANOUT_ROOM}/")
        await publisher.open()
        return await fanout(
            run, Target("baseline", [port], {process.name: process.pid}), BaselineIngress(publisher), FANOUT_ROOM
        )
    finally:
        process.stop()


async def scaleout(run: Run, deployment: GatewayDeployment) -> dict:
    """The same room and staircase on one ASGI process, then on two (readers split, HTTP posts
    alternating between them, MQTT through runmqtt as before), each held to ``scaleout_cores``."""
    cores = run.sizes.scaleout_cores
    limit = f", each held to {cores} cores" if cores else ", no CPU limit"
    result: dict[str, Any] = {"cores_each": cores or None}
    for count in (1, 2):
        while len(deployment.daphnes) < count:
            deployment.add_daphne()
        if cores:
            servers.limit_cores(deployment.daphnes[count - 1][1], cores, run.cleanup)
        ports = deployment.ports[:count]
        logger.info("scale-out: %d ASGI process%s%s", count, "es" if count > 1 else "", limit)
        target = Target(f"gateway x{count}", ports, deployment.pids)
        ingress = GatewayIngress(SCALE_ROOM, ports, run.mqtt_url, run.sizes.ways_in)
        result["one_process" if count == 1 else "two_processes"] = await fanout(
            run, target, ingress, SCALE_ROOM, latency=False
        )
    return result


# Ingest


async def ingest(run: Run, deployment: GatewayDeployment) -> dict:
    """MQTT QoS 1 and mail, as fast as they are taken: stored (read back over HTTP) and delivered (a
    WebSocket reader), the rate from the first publish to the last delivery."""
    sizes = run.sizes
    port = deployment.ports[0]
    pool = SubscriberPool(1)
    run.cleanup.add("ingest subscriber", pool.close)
    http = HttpClient(port, 2)
    result: dict[str, Any] = {}
    try:
        joined = await asyncio.to_thread(
            pool.connect, [("127.0.0.1", port, f"/ws/chat/{INGEST_ROOM}/")], sample_every=1
        )
        if joined["failed"]:
            raise RuntimeError(f"the ingest subscriber could not connect: {joined['errors']}")
        result["mqtt"] = await _ingest_mqtt(run, deployment, pool, http, sizes.mqtt_messages)
        result["email"] = await _ingest_mail(run, deployment, pool, http, sizes.mails)
        if sizes.mqtt_adapters > 1:
            result["mqtt_shared"] = await _ingest_mqtt_shared(
                run, deployment, pool, http, sizes.mqtt_messages, sizes.mqtt_adapters
            )
    finally:
        await asyncio.to_thread(pool.close)
        http.close()
    return result


async def _ingest_phase(
    run: Run,
    deployment: GatewayDeployment,
    pool: SubscriberPool,
    http: HttpClient,
    publisher: int,
    count: int,
    send: Any,
    pids: dict[str, int] | None = None,
) -> dict:
    """Shared by both ways in: ``send(texts)`` publishes and returns (accepted count, errors). ``pids``: the
    server processes to charge (the deployment's by default)."""
    before = await last_id(http, INGEST_ROOM)
    pool.reset()
    messages = [(publisher, next(run.sequence)) for _ in range(count)]
    window = Window(pids or deployment.pids, pool)
    broker = servers.bench_broker_pids(run.log_dir)
    broker_before, children_before = servers.cpu_seconds(broker), _ended_children_cpu()
    window.start()
    started = time.monotonic()
    accepted, errors = await send(messages)
    accepted_s = time.monotonic() - started
    timeout = max(run.sizes.drain_timeout, count / 20)
    await wait_received(pool, count, timeout)
    delivered_s = time.monotonic() - started
    figures = window.stop()
    broker_cpu_s = servers.cpu_seconds(broker) - broker_before
    publisher_cpu_s = figures["publisher_cores"] * figures["seconds"] + _ended_children_cpu() - children_before
    report = pool.report(count, sum(checksum_of(*message) for message in messages))
    stored = await stored_texts(http, INGEST_ROOM, before)
    expected = {sequence for _, sequence in messages}
    found = [int(m["message"].split()[1].split(":")[1]) for m in stored if m["message"].startswith("bench ")]
    check = verdict(report, messages, errors)
    check.update(
        stored=len(found), stored_missing=len(expected - set(found)), stored_duplicates=len(found) - len(set(found))
    )
    check["lossless"] = check["lossless"] and not check["stored_missing"] and not check["stored_duplicates"]
    return {
        "messages": count,
        "accepted": accepted,
        "accepted_s": accepted_s,
        "accepted_per_s": accepted / accepted_s if accepted_s else None,
        "delivered_s": delivered_s,
        "per_s": count / delivered_s if check["lossless"] else None,
        "server_cpu_us_per_message": 1e6 * figures["server_cpu_s"] / count,
        "server_cores_each": figures["server_cores_each"],
        "redis_cpu_us_per_message": 1e6 * figures["redis_cpu_s"] / count,
        "database_cpu_us_per_message": 1e6 * figures["database_cpu_s"] / count,
        # Where the rest of the machine went: the bench's Mosquitto, and the publisher (this process, and
        # mosquitto_pub when it publishes).
        "broker_cpu_us_per_message": 1e6 * broker_cpu_s / count,
        "publisher_cpu_us_per_message": 1e6 * publisher_cpu_s / count,
        "latency_ms": latency_ms(report.latencies),
        "check": check,
    }


def _ended_children_cpu() -> float:
    """CPU time of this process's children that have ended (mosquitto_pub, once it has)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _ingest_mqtt(
    run: Run,
    deployment: GatewayDeployment,
    pool: SubscriberPool,
    http: HttpClient,
    count: int,
    pids: dict[str, int] | None = None,
) -> dict:
    logger.info("ingest: %d MQTT QoS 1 messages, up to 1000 in flight", count)

    async def send(messages: list[tuple[int, int]]) -> tuple[int, list[str]]:
        if run.sizes.mqtt_publisher == "mosquitto_pub":
            return await _mosquitto_pub(run, [bench_text(MQTT, sequence) for _, sequence in messages])
        if run.sizes.mqtt_publisher != "paho":
            raise ValueError(f"--mqtt-publisher: paho or mosquitto_pub, not {run.sizes.mqtt_publisher!r}")
        publisher = MqttPublisher(run.mqtt_url, inflight=1000)
        try:
            for _, sequence in messages:
                publisher.publish(f"rooms/{INGEST_ROOM}/in", bench_text(MQTT, sequence))
            acked = await asyncio.to_thread(publisher.wait_acked, run.sizes.drain_timeout)
        finally:
            publisher.close()
        return acked, [] if acked == len(messages) else [f"the broker acknowledged {acked} of {len(messages)}"]

    figures = await _ingest_phase(run, deployment, pool, http, MQTT, count, send, pids)
    logger.info("ingest: MQTT %s messages/s stored and delivered", _fmt(figures["per_s"]))
    return figures


async def _mosquitto_pub(run: Run, texts: list[str]) -> tuple[int, list[str]]:
    """Publish ``texts`` at QoS 1, up to 1000 in flight, with Mosquitto's C client (one message a line of its
    input); it ends once every PUBACK is in. (accepted count, errors)."""
    parts = urlsplit(run.mqtt_url)
    argv = ["mosquitto_pub", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 1883), "-q", "1"]
    argv += ["-M", "1000", "-l", "-t", f"rooms/{INGEST_ROOM}/in"]
    argv += ["-u", parts.username or "", "-P", parts.password or ""]  # the throwaway broker's one account
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        _, error = await asyncio.wait_for(
            process.communicate("".join(f"{text}\n" for text in texts).encode()), run.sizes.drain_timeout
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        return 0, [f"mosquitto_pub did not finish in {run.sizes.drain_timeout}s"]
    if process.returncode:
        return 0, [f"mosquitto_pub exited {process.returncode}: {error.decode(errors='replace').strip()}"]
    return len(texts), []


async def _ingest_mqtt_shared(
    run: Run, deployment: GatewayDeployment, pool: SubscriberPool, http: HttpClient, count: int, adapters: int
) -> dict:
    """The MQTT phase again with ``adapters`` runmqtt processes: the deployment's and more members of its
    shared-subscription group, which Mosquitto hands the messages to in turn (so one topic's messages are
    stored by several processes: arrival order is not kept across them, each is stored once)."""
    extra = []
    try:
        for number in range(2, adapters + 1):
            process = servers.ServerProcess(
                f"runmqtt-{number}", [servers.PYTHON, "manage.py", "runmqtt"], deployment.env, run.log_dir
            ).start(run.cleanup)
            extra.append(process)
        for process in extra:
            process.wait_for_output("MQTT subscribed")
        logger.info("ingest: %d runmqtt processes in one shared subscription", adapters)
        pids = dict(deployment.pids, **{process.name: process.pid for process in extra})
        figures = await _ingest_mqtt(run, deployment, pool, http, count, pids)
    finally:
        for process in extra:
            process.stop()  # leaves the group first: its share comes back to the deployment's adapter
    figures["adapters"] = adapters
    return figures


async def _ingest_mail(
    run: Run, deployment: GatewayDeployment, pool: SubscriberPool, http: HttpClient, count: int
) -> dict:
    sessions = run.sizes.smtp_sessions
    logger.info("ingest: %d mails over %d parallel SMTP sessions", count, sessions)

    async def send(messages: list[tuple[int, int]]) -> tuple[int, list[str]]:
        texts = [bench_text(EMAIL, sequence) for _, sequence in messages]
        accepted: list[int] = []
        errors = await asyncio.to_thread(
            send_mails, deployment.smtp_port, f"{INGEST_ROOM}@localhost", texts, sessions, accepted.append
        )
        return len(accepted), errors

    figures = await _ingest_phase(run, deployment, pool, http, EMAIL, count, send)
    figures["sessions"] = sessions
    logger.info("ingest: %s mails/s stored and delivered", _fmt(figures["per_s"]))
    return figures


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# Idle connections


# Idle is not silent: daphne walks all its connections every second and pings each every 20 s. The
# server counts as settled after the joins below this much CPU per connection (0.2 cores at 100,000).
IDLE_CORES_PER_CONNECTION = 2e-6
IDLE_WINDOW = 20.0  # seconds over which the idle server's CPU is measured, once settled: daphne's ping interval
FILES_BESIDES_CONNECTIONS = 256  # a server's own files: listening socket, Redis, PostgreSQL, logs, epoll


async def connections(run: Run, kind: str) -> dict:
    """``idle_connections`` WebSockets held open on one fresh server process; its RSS growth per connection.

    Connections are spread over rooms of ``idle_room_size`` (each gateway join announces presence to
    its room, so one huge room would measure presence traffic, not idle connections). A warm-up set
    is opened first and the memory counted from there, so start-up allocations are not charged.
    """
    sizes = run.sizes
    if kind == "gateway":
        port, process = servers.start_gateway_daphne("daphne-idle", run.gateway_env, run.cleanup, run.log_dir)
    else:
        prefix = run.gateway_env["CHANNEL_LAYER_PREFIX"] + "-baseline-idle"
        port, process = servers.start_baseline_daphne("baseline-idle", run.redis_url, prefix, run.cleanup, run.log_dir)
    pool = SubscriberPool(sizes.idle_processes)
    run.cleanup.add(f"{kind} idle connections", pool.close)
    try:
        soft = psutil.Process(process.pid).rlimit(psutil.RLIMIT_NOFILE)[0]
        count = min(sizes.idle_connections, soft - FILES_BESIDES_CONNECTIONS)
        if count < sizes.idle_connections:  # more would only wait for handshakes the server cannot accept
            run.warn(
                f"{kind} server may open only {soft:,} files: {count:,} idle connections, not "
                f"{sizes.idle_connections:,} (bench/README.md, 'idle connections')"
            )
        targets = [("127.0.0.1", port, f"/ws/chat/{IDLE_PREFIX}{n // sizes.idle_room_size}/") for n in range(count)]
        warm = min(len(targets) // 10, 500)
        logger.info(
            "%s: %d idle connections (%d to warm up) in %d processes", kind, len(targets), warm, sizes.idle_processes
        )
        first = await asyncio.to_thread(pool.connect, targets[:warm], concurrency=sizes.connect_concurrency)
        await asyncio.to_thread(servers.wait_until_idle, [process.pid])
        before = servers.rss(process.pid)
        rest = await asyncio.to_thread(
            pool.connect, targets[warm:], concurrency=sizes.connect_concurrency, budget=sizes.idle_budget
        )
        rate = rest["opened"] / rest["seconds"] if rest["seconds"] else 0.0
        if rest["skipped"]:
            run.warn(
                f"{kind} idle connections: {rest['skipped']:,} of {len(targets):,} not tried: opening them took "
                f"longer than --idle-budget {sizes.idle_budget:g}s ({rate:.0f} handshakes/s)"
            )
        if first["failed"] or rest["failed"]:
            run.warn(f"{kind} idle connections: {first['failed'] + rest['failed']} handshakes failed: {rest['errors']}")
        quiet = max(0.03, IDLE_CORES_PER_CONNECTION * sizes.idle_connections)
        settle = await asyncio.to_thread(servers.wait_until_idle, [process.pid], below=quiet)
        after = servers.rss(process.pid)
        cpu_before, clock = servers.cpu_seconds([process.pid]), time.monotonic()
        await asyncio.sleep(IDLE_WINDOW)
        idle_cores = (servers.cpu_seconds([process.pid]) - cpu_before) / (time.monotonic() - clock)
        report = await asyncio.to_thread(pool.report, 0, 0)
        held = report.subscribers - report.closed
        measured = rest["opened"] - report.closed
        return {
            "connections": count,
            "connections_asked": sizes.idle_connections,
            "held": held,
            "failed": first["failed"] + rest["failed"],
            "errors": first["errors"] + rest["errors"],
            "skipped": rest["skipped"],
            "connect_s": rest["seconds"],
            "handshakes_per_s": rate,
            "settle_s": settle,
            "rss_before_mb": before / 2**20,
            "rss_after_mb": after / 2**20,
            "kb_per_connection": (after - before) / 1024 / measured if measured > 0 else None,
            "idle_cores": idle_cores,
            "room_size": sizes.idle_room_size,
        }
    finally:
        await asyncio.to_thread(pool.close)
        process.stop()
