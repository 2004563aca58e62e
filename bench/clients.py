"""WebSocket subscribers in processes of their own, apart from the servers they measure.

Each subscriber process runs one asyncio loop holding many raw connections (``wsproto``). Every
connection counts the bench messages it gets and checks them: each once, in increasing order
(the gateway's message ``id`` when there is one, else the publisher's sequence number), with a
checksum over what arrived; a sample of connections also records publish-to-deliver latency.
Progress (the fewest messages any connection has had, and all deliveries) is shared through a
lock-free array, so a publisher can keep a bounded number of messages in flight without asking.
Commands (connect, reset, report, close) go over a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import mqttpackets
from .wsproto import BINARY, WsClient, handshake_request

# "bench <publisher>:<sequence> <time.time() at publish>" is the text of every bench message.
BENCH = re.compile(rb"bench (\d+):(\d+) (\d+\.\d+)")
MESSAGE_ID = re.compile(rb'"id": (\d+)')
HISTORY = b'{"type": "history"'
PROGRESS_EVERY = 0.005  # seconds between progress updates in the shared array
SLOTS = 2  # per process in the shared array: [fewest messages on a connection, deliveries]


def bench_text(publisher: int, sequence: int) -> str:
    return f"bench {publisher}:{sequence} {time.time():.6f}"


def checksum_of(publisher: int, sequence: int) -> int:
    return (publisher << 40) + sequence


SOURCE_ADDRESSES = 16  # 127.0.0.1 to 127.0.0.16: ~28,000 ephemeral ports each towards one server port


def raise_nofile(wanted: int = 0) -> int:
    """Lift this process's open-file limit to its hard limit: thousands of sockets need it. When more
    than that is ``wanted`` and the process may (root, or ``CAP_SYS_RESOURCE``), the hard limit is raised
    too, up to the kernel's ``fs.nr_open``. Children inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            ceiling = wanted
        with contextlib.suppress(ValueError, OSError):  # not allowed: keep the hard limit there is
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, ceiling), min(wanted, ceiling)))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def source_address(host: str, number: int) -> tuple[str, int] | None:
    """Where connection ``number`` to ``host`` comes from: on loopback, spread over ``SOURCE_ADDRESSES``
    addresses (all of 127.0.0.0/8 is the machine's own), since one source address has only the
    ephemeral port range (~28,000) towards one server port. Elsewhere the system chooses."""
    if host != "127.0.0.1":
        return None
    return f"127.0.0.{1 + number % SOURCE_ADDRESSES}", 0


class Subscriber(WsClient):
    """One reader of a room, counting and checking bench messages."""

    def __init__(self, request: bytes, totals: list[int], sampled: bool) -> None:
        super().__init__(request, self.received)
        self.totals = totals  # shared by the process's subscribers: [deliveries]
        self.sampled = sampled
        self.latencies: list[float] = []
        self.last_id = 0
        self.last_sequence: dict[int, int] = {}
        self.ready: asyncio.Future = self.opened  # joined: for the servers here, once the handshake is done
        self.reset()

    def reset(self) -> None:
        self.count = self.checksum = self.disorder = self.others = 0
        self.latencies = []

    def received(self, payload: bytes) -> None:
        if payload.startswith(HISTORY):
            return  # what came before the join, not part of any measurement
        found = BENCH.search(payload)
        if found is None:
            self.others += 1  # presence and other frames
            return
        now = time.time()
        publisher, sequence = int(found[1]), int(found[2])
        self.count += 1
        self.totals[0] += 1
        self.checksum += (publisher << 40) + sequence
        message_id = MESSAGE_ID.search(payload, 0, found.start())
        if message_id is not None:
            value = int(message_id[1])
            if value <= self.last_id:
                self.disorder += 1
            self.last_id = value
        else:
            if sequence <= self.last_sequence.get(publisher, -1):
                self.disorder += 1
            self.last_sequence[publisher] = sequence
        if self.sampled:
            self.latencies.append(now - float(found[3]))


class MqttSubscriber(Subscriber):
    """A reader of an MQTT topic over a WebSocket (subprotocol ``mqtt``): after the handshake, CONNECT
    (MQTT 3.1.1) and SUBSCRIBE at QoS 0; ready once the broker's SUBACK came. Each PUBLISH's payload
    is counted and checked as a room message is (by the publisher's sequence: MQTT has no ids)."""

    def __init__(self, request: bytes, totals: list[int], sampled: bool, topic: str) -> None:
        super().__init__(request, totals, sampled)
        self.on_message = mqttpackets.MqttStream(self.packet).feed
        self.topic = topic
        self.ready = asyncio.get_running_loop().create_future()
        self.opened.add_done_callback(self.handshake_done)

    def handshake_done(self, opened: asyncio.Future) -> None:
        if opened.cancelled() or opened.exception() is not None:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError("the WebSocket handshake failed"))
            return
        self.send(BINARY, mqttpackets.connect(f"bench-{id(self):x}"))

    def packet(self, kind: int, flags: int, body: bytes) -> None:
        if kind == mqttpackets.PUBLISH:
            self.received(mqttpackets.publish_payload(flags, body))
        elif kind == mqttpackets.CONNACK:
            if body[1:2] != b"\x00":
                self.ready.set_exception(ConnectionRefusedError(f"CONNACK {body.hex()}"))
                self.close()
                return
            self.send(BINARY, mqttpackets.subscribe(self.topic))
        elif kind == mqttpackets.SUBACK and not self.ready.done():
            if body[2:3] == b"\x80":
                self.ready.set_exception(ConnectionRefusedError(f"SUBACK {body.hex()}"))
                return
            self.ready.set_result(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before SUBACK: {exc}"))


class SubscriberProcess:
    """The body of one subscriber process: connections, progress updates and the command loop."""

    def __init__(self, index: int, pipe: Connection, progress: Any) -> None:
        self.index, self.pipe, self.progress = index, pipe, progress
        self.subscribers: list[Subscriber] = []
        self.totals = [0]

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue = asyncio.Queue()

        def read_command() -> None:
            try:
                commands.put_nowait(self.pipe.recv())
            except (EOFError, OSError):  # the orchestrator is gone: close up and end
                loop.remove_reader(self.pipe.fileno())
                commands.put_nowait(("close", {}))

        loop.add_reader(self.pipe.fileno(), read_command)
        updater = loop.create_task(self.update_progress())
        try:
            while True:
                command, arguments = await commands.get()
                if command == "close":
                    for subscriber in self.subscribers:
                        subscriber.close()
                    await asyncio.sleep(0.2)  # let the close frames and FINs go out
                    with contextlib.suppress(OSError):
                        self.pipe.send({"closed": len(self.subscribers)})
                    return
                self.pipe.send(await getattr(self, command)(**arguments))
        finally:
            updater.cancel()

    async def update_progress(self) -> None:
        slot = self.index * SLOTS
        while True:
            subscribers = self.subscribers
            self.progress[slot] = min((s.count for s in subscribers), default=0)
            self.progress[slot + 1] = self.totals[0]
            await asyncio.sleep(PROGRESS_EVERY)

    async def connect(
        self,
        targets: list[tuple],  # (host, port, path), or (host, port, path, MQTT topic)
        sample_every: int,
        concurrency: int,
        timeout: float,
        budget: float | None = None,
    ) -> dict:
        """Open one connection per target (host, port, path), ``concurrency`` handshakes at a time; after
        ``budget`` seconds no new handshake is started (those not tried are counted as skipped)."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        skipped = 0
        started = time.monotonic()

        def make_subscriber(host: str, port: int, path: str, topic: str | None, sampled: bool) -> Subscriber:
            if topic is None:
                return Subscriber(handshake_request(host, port, path), self.totals, sampled)
            return MqttSubscriber(handshake_request(host, port, path, "mqtt"), self.totals, sampled, topic)

        async def open_one(number: int, host: str, port: int, path: str, topic: str | None = None) -> None:
            nonlocal skipped
            async with gate:
                if budget is not None and time.monotonic() - started > budget:
                    skipped += 1
                    return
                sampled = sample_every > 0 and (len(self.subscribers) + number) % sample_every == 0
                local = source_address(host, self.index + len(self.subscribers) + number)
                try:
                    _, subscriber = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: make_subscriber(host, port, path, topic, sampled), host, port, local_addr=local
                        ),
                        timeout,
                    )
                    await asyncio.wait_for(subscriber.ready, timeout)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    errors.append(f"{path}: {exc!r}")
                    return
                fresh.append(subscriber)

        fresh: list[Subscriber] = []
        await asyncio.gather(*(open_one(n, *target) for n, target in enumerate(targets)))
        self.subscribers.extend(fresh)
        return {
            "opened": len(fresh),
            "errors": errors[:5],
            "failed": len(errors),
            "skipped": skipped,
            "seconds": time.monotonic() - started,
        }

    async def reset(self) -> dict:
        for subscriber in self.subscribers:
            subscriber.reset()
        return {"ok": True}

    async def report(self, expected_count: int, expected_checksum: int) -> dict:
        """How each connection fared against what was published since the last reset."""
        result = Report(subscribers=len(self.subscribers))
        for subscriber in self.subscribers:
            result.add(subscriber, expected_count, expected_checksum)
        return result.__dict__


@dataclass
class Report:
    """Loss, duplicates and order over a set of connections, and the latency samples."""

    subscribers: int = 0
    complete: int = 0
    missing: int = 0
    extra: int = 0
    checksum_mismatches: int = 0
    disorder: int = 0
    closed: int = 0
    others: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, subscriber: Subscriber, expected_count: int, expected_checksum: int) -> None:
        self.missing += max(0, expected_count - subscriber.count)
        self.extra += max(0, subscriber.count - expected_count)
        mismatch = subscriber.checksum != expected_checksum
        self.checksum_mismatches += mismatch
        self.complete += subscriber.count == expected_count and not mismatch and not subscriber.disorder
        self.disorder += subscriber.disorder
        self.closed += subscriber.closed
        self.others += subscriber.others
        self.latencies.extend(subscriber.latencies)

    def merge(self, other: dict) -> None:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + value)

    @property
    def lossless(self) -> bool:
        return self.subscribers > 0 and self.complete == self.subscribers


def _process_main(index: int, pipe: Connection, progress: Any) -> None:
    raise_nofile()
    asyncio.run(SubscriberProcess(index, pipe, progress).main())


class SubscriberPool:
    """Parent side: ``processes`` subscriber processes, commanded together, read without asking."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")  # a clean interpreter, not a copy of the orchestrator
        self.progress = context.Array("q", processes * SLOTS, lock=False)
        self.pipes: list[Connection] = []
        self.processes = []
        for index in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=_process_main, args=(index, child, self.progress), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        self.connected = 0

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def _command(self, command: str, timeout: float, *, only_alive: bool = False, **arguments: Any) -> list[dict]:
        pairs = [(pipe, process) for pipe, process in zip(self.pipes, self.processes, strict=True)]
        if only_alive:
            pairs = [(pipe, process) for pipe, process in pairs if process.is_alive()]
        for pipe, _ in pairs:
            pipe.send((command, arguments))
        replies = []
        for pipe, process in pairs:
            if not pipe.poll(timeout):
                raise TimeoutError(f"subscriber process {process.pid} did not answer {command!r} in {timeout}s")
            replies.append(pipe.recv())
        return replies

    def connect(
        self,
        targets: list[tuple],  # (host, port, path), or (host, port, path, MQTT topic)
        *,
        sample_every: int = 0,
        concurrency: int = 100,
        timeout: float = 60,
        budget: float | None = None,
    ) -> dict:
        """Spread ``targets`` round-robin over the processes and open them all, ``concurrency`` handshakes
        at a time in all (servers refuse handshakes that wait too long: daphne after 5 s); a summary."""
        shares: list[list[tuple[str, int, str]]] = [[] for _ in self.pipes]
        concurrency = max(1, concurrency // len(self.pipes))
        for number, target in enumerate(targets):
            shares[number % len(shares)].append(target)
        for pipe, share in zip(self.pipes, shares, strict=True):
            arguments = {"targets": share, "sample_every": sample_every, "concurrency": concurrency, "timeout": timeout}
            pipe.send(("connect", {**arguments, "budget": budget}))
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(timeout * (1 + len(targets) / concurrency) + 30):
                raise TimeoutError("a subscriber process did not finish connecting")
            replies.append(pipe.recv())
        opened = sum(reply["opened"] for reply in replies)
        self.connected += opened
        return {
            "opened": opened,
            "failed": sum(reply["failed"] for reply in replies),
            "skipped": sum(reply.get("skipped", 0) for reply in replies),
            "errors": [error for reply in replies for error in reply["errors"]][:5],
            "seconds": max(reply["seconds"] for reply in replies),
        }

    def reset(self) -> None:
        self._command("reset", 30)
        time.sleep(PROGRESS_EVERY * 4)  # the shared progress shows the reset before anyone reads it

    def fewest_received(self) -> int:
        """The fewest bench messages any connection has had since the last reset."""
        return min(self.progress[index * SLOTS] for index in range(len(self.pipes)))

    def deliveries(self) -> int:
        """Bench messages delivered to all connections, ever."""
        return sum(self.progress[index * SLOTS + 1] for index in range(len(self.pipes)))

    def report(self, expected_count: int, expected_checksum: int) -> Report:
        total = Report()
        for reply in self._command("report", 60, expected_count=expected_count, expected_checksum=expected_checksum):
            total.merge(reply)
        return total

    def close(self) -> None:
        """Close every connection, then end the processes (killed if they do not end by themselves)."""
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self._command("close", 30, only_alive=True)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
