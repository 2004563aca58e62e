"""The reconnect storm: ``storm_clients`` readers in one room, messages flowing, the ASGI process restarted.

Messages enter by MQTT (``runmqtt`` stays up, so they are stored while the ASGI process is down) at
``storm_rate`` a second. Once everyone is in, the gateway's daphne gets SIGTERM and a new one is started
on the same port. Every reader reconnects as the chat page does (``gateway/static/gateway/chat.js``):
told ``1012`` (service restart), after 0.2–2 s at random; then ``1 s × (0.8–1.2)``, doubling up to
15 s while attempts fail, back to 1 s once a history frame came, each time with ``?after=<the last id
it saw>``. The figure is the seconds from "the new process listens" (a TCP connection to it succeeds)
to "every reader has every message published before that moment" (the new process's CPU, from its
start, is reported with it; /healthz is timed too, but with admission it queues like the readers);
then publishing stops and every reader is checked: every message once, ids increasing across the
history and live frames of all its connections.

``storm_socket`` ``held``: the bench holds the listening socket (backlog 4096) and hands it to every ASGI
process (``--fd``), as a systemd socket unit does; reconnects during the restart wait in its backlog
instead of being refused. The figure is then timed from the new process's ready line (a connection
succeeds all along), and from the SIGTERM in both cases.

The readers live in ``storm_processes`` processes of their own, each connecting from an address of
its own in 127.0.0.0/8 (ephemeral ports: 10,000 connections, and again 10,000 after the restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import random
import re
import signal
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from . import servers
from .clients import raise_nofile
from .publishers import MQTT, MqttPublisher
from .scenarios import Run
from .wsproto import WsClient, handshake_request

logger = logging.getLogger("bench")

STORM_ROOM = "bench_storm"
MIN_DELAY, MAX_DELAY = 1.0, 15.0  # chat.js: MIN_DELAY, MAX_DELAY
SERVICE_RESTART = 1012  # chat.js: closed with it, back after RESTART_MIN + random() * RESTART_SPREAD
RESTART_MIN, RESTART_SPREAD = 0.2, 1.8
BENCH = re.compile(rb"bench (\d+):(\d+) ")
MESSAGE_ID = re.compile(rb'"id": (\d+)')
HISTORY = b'{"type": "history"'
HELD_BACKLOG = 4096  # --storm-socket held: the socket unit's Backlog= (deploy/systemd/gateway-asgi@.socket)
SLOTS = 3  # per process: [fewest messages seen by a reader, readers connected, readers ever reconnected]


class ReaderConnection(WsClient):
    """One connection of a reader, which hears when an open connection ends (a failed handshake is
    the attempt's own failure)."""

    def __init__(self, request: bytes, reader: Reader) -> None:
        super().__init__(request, reader.message)
        self.reader = reader
        self.opened.add_done_callback(lambda opened: opened.cancelled() or opened.exception())  # seen: no warning

    def connection_lost(self, exc: Exception | None) -> None:
        opened = self.opened
        was_open = opened.done() and not opened.cancelled() and opened.exception() is None
        super().connection_lost(exc)
        if was_open:
            self.reader.lost(self.close_code)


class Reader:
    """One browser tab: its connection (one at a time), what it has seen, its reconnection backoff."""

    def __init__(self, host: str, port: int, path: str, source: str) -> None:
        self.host, self.port, self.path, self.source = host, port, path, source
        self.seen: set[int] = set()
        self.duplicates = self.disorder = self.attempts = self.failed_attempts = 0
        self.last_id: int | None = None
        self.delay = MIN_DELAY
        self.connection: ReaderConnection | None = None
        self.connected = False
        self.generation = 0  # connections that got their history
        self.attempt_at = 0.0  # time.time() of the last attempt
        self.history_at: list[tuple[float, float]] = []  # (attempt, its history), per connection
        self.closing = False

    @property
    def count(self) -> int:
        return len(self.seen)

    def url(self) -> str:
        after = "" if self.last_id is None else f"&after={self.last_id}"
        return f"{self.path}?name=storm{after}"

    async def connect(self) -> None:
        self.attempts += 1
        self.attempt_at = time.time()
        loop = asyncio.get_running_loop()
        request = handshake_request(self.host, self.port, self.url())
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: ReaderConnection(request, self), self.host, self.port, local_addr=(self.source, 0)
                ),
                30,
            )
            self.connection = connection
            await asyncio.wait_for(asyncio.shield(connection.opened), 30)
        except (OSError, TimeoutError, ConnectionError):
            self.failed_attempts += 1
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            self.schedule()
            return
        self.connected = True

    def message(self, payload: bytes) -> None:
        if payload.startswith(HISTORY):
            self.delay = MIN_DELAY  # healthy again (chat.js)
            self.generation += 1
            self.history_at.append((self.attempt_at, time.time()))
            history = json.loads(payload)
            for item in history["messages"]:
                self.take(item["id"], str(item.get("message", "")).encode())
            stands = history["last_id"]  # where the connection stands, even with no message yet (chat.js)
            self.last_id = stands if self.last_id is None else max(self.last_id, stands)
            return
        found = MESSAGE_ID.search(payload)
        if found is not None:
            self.take(int(found[1]), payload)

    def take(self, message_id: int, text: bytes) -> None:
        bench = BENCH.search(text)
        if self.last_id is not None and message_id <= self.last_id:
            if bench is not None and int(bench[2]) in self.seen:
                self.duplicates += 1
                return
            self.disorder += 1
        self.last_id = message_id if self.last_id is None else max(self.last_id, message_id)
        if bench is not None:
            sequence = int(bench[2])
            if sequence in self.seen:
                self.duplicates += 1
            self.seen.add(sequence)

    def lost(self, close_code: int | None) -> None:
        self.connected = False
        self.connection = None
        if self.closing:
            return
        if close_code == SERVICE_RESTART:
            self.schedule(RESTART_MIN + random.random() * RESTART_SPREAD)  # chat.js's reconnectAfterRestart
        else:
            self.schedule()

    def schedule(self, wait: float | None = None) -> None:
        """chat.js's scheduleReconnect: jittered exponential backoff (or ``wait``, told the server restarts)."""
        if wait is None:
            wait = self.delay * (0.8 + random.random() * 0.4)  # jitter, not a secret
            self.delay = min(self.delay * 2, MAX_DELAY)
        asyncio.get_running_loop().call_later(wait, lambda: asyncio.ensure_future(self.connect()))


class StormProcess:
    def __init__(self, index: int, pipe: Connection, progress: Any) -> None:
        self.index, self.pipe, self.progress = index, pipe, progress
        self.readers: list[Reader] = []

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue = asyncio.Queue()

        def read_command() -> None:
            try:
                commands.put_nowait(self.pipe.recv())
            except (EOFError, OSError):
                loop.remove_reader(self.pipe.fileno())
                commands.put_nowait(("close", {}))

        loop.add_reader(self.pipe.fileno(), read_command)
        updater = loop.create_task(self.update_progress())
        try:
            while True:
                command, arguments = await commands.get()
                if command == "close":
                    for reader in self.readers:
                        reader.closing = True
                        if reader.connection is not None:
                            reader.connection.close()
                    await asyncio.sleep(0.2)
                    with contextlib.suppress(OSError):
                        self.pipe.send({"closed": len(self.readers)})
                    return
                self.pipe.send(await getattr(self, command)(**arguments))
        finally:
            updater.cancel()

    async def update_progress(self) -> None:
        slot = self.index * SLOTS
        while True:
            readers = self.readers
            self.progress[slot] = min((r.count for r in readers), default=0)
            self.progress[slot + 1] = sum(r.connected for r in readers)
            self.progress[slot + 2] = sum(r.generation >= 2 for r in readers)
            await asyncio.sleep(0.005)

    async def join(self, host: str, port: int, path: str, count: int, source: str, concurrency: int) -> dict:
        gate = asyncio.Semaphore(concurrency)
        readers = [Reader(host, port, path, source) for _ in range(count)]

        async def one(reader: Reader) -> None:
            async with gate:
                await reader.connect()
                while reader.generation < 1 and reader.connected:
                    await asyncio.sleep(0.01)

        started = time.monotonic()
        self.readers = readers
        await asyncio.gather(*(one(reader) for reader in readers))
        return {"joined": sum(r.connected for r in readers), "seconds": time.monotonic() - started}

    async def report(self, expected: list[int]) -> dict:
        wanted = set(expected)
        missing = [len(wanted - reader.seen) for reader in self.readers]
        histories = [entry for reader in self.readers for entry in reader.history_at[1:]]  # after the first join
        return {
            "readers": len(self.readers),
            "complete": sum(
                not m and not r.duplicates and not r.disorder for m, r in zip(missing, self.readers, strict=True)
            ),
            "missing": sum(missing),
            "duplicates": sum(r.duplicates for r in self.readers),
            "disorder": sum(r.disorder for r in self.readers),
            "attempts": sum(r.attempts for r in self.readers),
            "failed_attempts": sum(r.failed_attempts for r in self.readers),
            "reconnected": sum(r.generation >= 2 for r in self.readers),
            "reconnect_attempts_at": [attempt for attempt, _ in histories],
            "history_waits": [history - attempt for attempt, history in histories],
        }


def _process_main(index: int, pipe: Connection, progress: Any) -> None:
    raise_nofile()
    asyncio.run(StormProcess(index, pipe, progress).main())


class StormPool:
    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
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

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def command(self, timeout: float, each: list[tuple[str, dict]]) -> list[dict]:
        for pipe, message in zip(self.pipes, each, strict=True):
            pipe.send(message)
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError("a storm client process did not answer")
            replies.append(pipe.recv())
        return replies

    def fewest_seen(self) -> int:
        return min(self.progress[n * SLOTS] for n in range(len(self.pipes)))

    def connected(self) -> int:
        return sum(self.progress[n * SLOTS + 1] for n in range(len(self.pipes)))

    def reconnected(self) -> int:
        return sum(self.progress[n * SLOTS + 2] for n in range(len(self.pipes)))

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self.command(30, [("close", {}) for _ in self.pipes])
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


async def _publish(run: Run, publisher: MqttPublisher, published: list[int], stop: asyncio.Event) -> None:
    """``storm_rate`` messages a second until ``stop``, open loop."""
    loop = asyncio.get_running_loop()
    start, number = loop.time(), 0
    while not stop.is_set():
        sequence = next(run.sequence)
        publisher.publish(f"rooms/{STORM_ROOM}/in", f"bench {MQTT}:{sequence} {time.time():.6f}")
        published.append(sequence)
        number += 1
        await asyncio.sleep(max(0.0, start + number / run.sizes.storm_rate - loop.time()))


async def _wait(condition: Any, timeout: float, every: float = 0.005) -> float | None:
    """Seconds until ``condition()`` held, or None at the deadline."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            return None
        await asyncio.sleep(every)
    return time.monotonic() - started


def _stopped_at(daphne: servers.ServerProcess) -> float:
    """``time.time()`` once this SIGTERMed process (a group's parent: once all of it) has exited (killed after 30 s)."""
    daphne.wait_stopped(30)
    return time.time()


def _answers_at(port: int, daphne: servers.ServerProcess) -> float:
    servers.wait_for_http(f"http://127.0.0.1:{port}/healthz", daphne, timeout=300)
    return time.time()


async def storm(run: Run) -> dict[str, Any]:
    sizes = run.sizes
    # The production default (the bench's 1 is for fan-out): a reader who missed no more than this many
    # messages catches up from the hub's memory, not from the database.
    env = dict(run.gateway_env, HISTORY_ON_JOIN=str(sizes.storm_history))
    argv = [servers.PYTHON, "manage.py", "runmqtt"]
    mqtt = servers.ServerProcess("storm-runmqtt", argv, env, run.log_dir).start(run.cleanup)
    mqtt.wait_for_output("MQTT subscribed")
    if sizes.storm_socket not in ("port", "held") or sizes.storm_restart not in ("after-exit", "at-once", "reload"):
        raise ValueError("--storm-socket is port or held; --storm-restart after-exit, at-once or reload")
    if sizes.storm_socket == "port" and sizes.storm_restart == "at-once":
        raise ValueError("--storm-restart at-once needs --storm-socket held")
    if sizes.storm_restart == "reload" and sizes.storm_asgi_processes < 2:
        raise ValueError("--storm-restart reload needs --storm-asgi-processes above 1 (a group reloads)")
    held: socket.socket | None = None
    port = servers.free_port()
    if sizes.storm_socket == "held":  # as systemd's gateway-asgi@.socket: 127.0.0.1, backlog 4096
        held = socket.create_server(("127.0.0.1", 0), backlog=HELD_BACKLOG)
        run.cleanup.add("storm's held socket", held.close)
        port = held.getsockname()[1]
    fd = None if held is None else held.fileno()
    processes = sizes.storm_asgi_processes  # sharing the held socket: gateway.serve --processes
    _, daphne = servers.start_gateway_daphne("storm-daphne", env, run.cleanup, run.log_dir, port, fd, processes)
    await asyncio.to_thread(servers.ready_at, daphne, nth=processes)
    pool = StormPool(sizes.storm_processes)
    run.cleanup.add("storm clients", pool.close)
    publisher = MqttPublisher(run.mqtt_url)
    stop = asyncio.Event()
    published: list[int] = []
    result: dict[str, Any] = {"clients": sizes.storm_clients, "rate": sizes.storm_rate}
    sending: asyncio.Task | None = None
    try:
        shares = [sizes.storm_clients // len(pool.pipes)] * len(pool.pipes)
        shares[0] += sizes.storm_clients - sum(shares)
        per = max(1, sizes.connect_concurrency // len(pool.pipes))
        logger.info("storm: %d readers joining %s", sizes.storm_clients, STORM_ROOM)
        joins = await asyncio.to_thread(
            pool.command,
            sizes.idle_budget + 120,
            [
                ("join", {"host": "127.0.0.1", "port": port, "path": f"/ws/chat/{STORM_ROOM}/", "count": share,
                          "source": f"127.0.0.{2 + n}", "concurrency": per})
                for n, share in enumerate(shares)
            ],
        )  # fmt: skip
        result["joined"] = sum(reply["joined"] for reply in joins)
        result["join_s"] = max(reply["seconds"] for reply in joins)
        if result["joined"] < sizes.storm_clients:
            run.warn(f"storm: only {result['joined']} of {sizes.storm_clients} readers joined")
        logger.info("storm: %d joined in %.1fs; messages flowing", result["joined"], result["join_s"])
        sending = asyncio.get_running_loop().create_task(_publish(run, publisher, published, stop))
        await asyncio.sleep(sizes.storm_before)
        how = {
            "at-once": "SIGTERM, new ones started at once",
            "after-exit": "SIGTERM, new ones started once they exited",
            "reload": "SIGHUP: a reload",
        }[sizes.storm_restart]
        where = "held socket" if held else "port"
        logger.info("storm: restarting the ASGI process(es) on the same %s (%s)", where, how)
        stopped_at = time.time()
        if sizes.storm_restart == "reload":  # SIGHUP: new processes beside the old, which stop once they listen
            daphne.popen.send_signal(signal.SIGHUP)
            started_at = stopped_at
            stopping = asyncio.ensure_future(
                asyncio.to_thread(servers.logged_at, daphne, " stopped (", sizes.storm_timeout, processes)
            )
            new_ones = range(processes + 1, 2 * processes + 1)  # the group's ready lines after its first ones
            readies = [await asyncio.to_thread(servers.ready_at, daphne, nth=n) for n in new_ones]
            # The start mark: the old processes told to stop (their readers told 1012), new ones ready already.
            ready = listening_at = await asyncio.to_thread(servers.logged_at, daphne, "reloaded: ")
        else:
            daphne.terminate()  # a group's parent passes it on to each of its processes
            stopping = asyncio.ensure_future(asyncio.to_thread(_stopped_at, daphne))
            if sizes.storm_restart != "at-once":
                await asyncio.shield(stopping)
            started_at = time.time()
            daphne = servers.launch_gateway_daphne(
                "storm-daphne-new", env, run.cleanup, run.log_dir, port, fd, processes
            )
            # The start mark: the new process's ready line (its log's own timestamp; the first of a group's, the
            # stricter). Without a held socket, also when a TCP connection first succeeds (the mark before: with
            # a held socket a connection succeeds all along, queued in the backlog).
            readies = [await asyncio.to_thread(servers.ready_at, daphne, nth=n) for n in range(1, processes + 1)]
            ready = min(readies)
            listening_at = ready
            if held is None:  # the earlier mark: a group's parent binds the port before its processes are ready
                listening_at = min(ready, await asyncio.to_thread(servers.wait_for_listening, port, daphne))
        # /healthz too: with admission (MAX_PENDING_HANDSHAKES) it waits in the listen backlog like the readers.
        answering = asyncio.ensure_future(asyncio.to_thread(_answers_at, port, daphne))
        target = len(published)  # every reader must have at least these (all published before it listened)
        waited = await _wait(
            lambda: pool.fewest_seen() >= target and pool.connected() == result["joined"], sizes.storm_timeout
        )
        caught_up_at = time.time()
        cpu = servers.cpu_seconds([daphne.pid])  # with a group's processes
        answers_at = await answering
        old_exited_at = await stopping
        result.update(
            socket=sizes.storm_socket,
            restart=sizes.storm_restart,
            asgi_processes=sizes.storm_asgi_processes,
            stop_s=old_exited_at - stopped_at,
            restart_to_start_s=started_at - stopped_at,
            restart_to_ready_s=ready - stopped_at,
            restart_to_last_ready_s=max(readies) - stopped_at,
            restart_to_listen_s=listening_at - stopped_at,
            restart_to_answer_s=answers_at - stopped_at,
            caught_up_s=None if waited is None else caught_up_at - listening_at,  # by the clock, not the poll
            caught_up_from_ready_s=None if waited is None else caught_up_at - ready,
            caught_up_from_sigterm_s=None if waited is None else caught_up_at - stopped_at,
            caught_up=waited is not None,
            messages_before_listening=target,
            server_cpu_s=cpu,
            load_average=os.getloadavg(),
        )
        logger.info(
            "storm: ready %.1fs after SIGTERM (old one gone after %.1fs; /healthz %.1fs); every reader caught up %s",
            ready - stopped_at, old_exited_at - stopped_at, answers_at - stopped_at,
            f"{caught_up_at - ready:.2f}s after the ready line, {caught_up_at - stopped_at:.2f}s after SIGTERM"
            if waited is not None else f"NOT within {sizes.storm_timeout:.0f}s",
        )  # fmt: skip
        await asyncio.sleep(1.0)  # live messages after the storm, too
        stop.set()
        await sending
        await asyncio.to_thread(publisher.wait_acked, sizes.drain_timeout)
        total = len(published)
        await _wait(lambda: pool.fewest_seen() >= total, sizes.drain_timeout)
        replies = await asyncio.to_thread(pool.command, 120, [("report", {"expected": published})] * len(pool.pipes))
        attempts = [at - listening_at for reply in replies for at in reply.pop("reconnect_attempts_at")]
        waits = sorted(w for reply in replies for w in reply.pop("history_waits"))
        check = {key: sum(reply[key] for reply in replies) for key in replies[0]}
        check["published"] = total
        check["lossless"] = check["complete"] == check["readers"] and check["readers"] > 0
        result["check"] = check
        result["last_attempt_after_listening_s"] = max(attempts, default=None)
        result["history_wait_ms"] = {
            "p50": 1000 * waits[len(waits) // 2] if waits else None,
            "p99": 1000 * waits[int(len(waits) * 0.99)] if waits else None,
            "max": 1000 * waits[-1] if waits else None,
        }
    finally:
        stop.set()
        if sending is not None and not sending.done():
            sending.cancel()
        publisher.close()
        await asyncio.to_thread(pool.close)
        daphne.stop()
        mqtt.stop()
    return result
