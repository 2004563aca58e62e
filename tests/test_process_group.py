"""``python -m gateway.serve --processes N`` (gateway/process_group.py): N of the gateway's daphne processes
on one listening socket the parent holds, as one gateway: a post reaches readers on every child (the
Redis layer), ``/metrics`` adds the children up whichever answers, a child that dies is replaced while
the socket keeps taking connections, a child that cannot start stops the group, SIGTERM stops them all
and frees the port, and SIGHUP replaces them with new ones that listen before the old ones stop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest
import websockets

from tests.support import (
    PYTHON,
    Process,
    free_port,
    gateway_env,
    http_json,
    migrate,
    receive,
    unique,
    wait_until,
)

REDIS_URL = "redis://127.0.0.1:6379/0"  # the machine's Redis; this run's keys have a prefix of their own
UP = "processes up on the listening socket"


@pytest.fixture
def group_env(tmp_path, redis_host):
    env = gateway_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX=unique("gwgroup")
    )
    migrate(env)
    return env


def start_group(env: dict[str, str], port: int, app: str = "config.asgi:application") -> Process:
    return Process([PYTHON, "-m", "gateway.serve", "--processes", "2", "--port", str(port), app], env=env).start()


@contextlib.contextmanager
def running_group(env: dict[str, str], port: int, app: str = "config.asgi:application") -> Iterator[Process]:
    """A group of two on ``port``, up; then stopped with SIGTERM, which must end it cleanly (exit 0)."""
    group = start_group(env, port, app)
    try:
        group.wait_for(UP, timeout=60)
        yield group
    finally:
        code = stop_group(group)
    assert code == 0, group.output


def children(group: Process) -> list[int]:
    return [child.pid for child in psutil.Process(group.popen.pid).children()]


def serving(port: int) -> Counter[int | None]:
    """Established connections to ``port``, by the process that holds each."""
    return Counter(
        connection.pid
        for connection in psutil.net_connections("tcp")
        if connection.laddr and connection.laddr.port == port and connection.status == "ESTABLISHED"
    )


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def stop_group(group: Process) -> int:
    pids = children(group) if group.popen.poll() is None else []
    try:
        return group.stop(timeout=30)
    finally:
        for pid in pids:  # never left behind by a failing test
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


@contextlib.asynccontextmanager
async def readers_on_both(port: int, room: str, pids: list[int]) -> AsyncIterator[list]:
    """WebSocket readers of ``room`` until each child holds at least one (the kernel picks who accepts)."""
    readers: list = []
    try:
        while not (len(readers) >= 4 and all(serving(port).get(pid) for pid in pids)):
            assert len(readers) < 60, f"60 readers, all on one process: {serving(port)}"
            readers.append(ws := await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/{room}/", open_timeout=10))
            await receive(ws, "history")
        yield readers
    finally:
        for ws in readers:
            await ws.close()


async def post(port: int, room: str, text: str) -> None:
    status, body = await asyncio.to_thread(
        http_json, "POST", f"http://127.0.0.1:{port}/api/rooms/{room}/messages", {"message": text}
    )
    assert status == 201, body


def gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)


def test_two_processes_serve_one_port_as_one_gateway_and_stop_together(group_env):
    port, room = free_port(), unique("group")
    with running_group(group_env, port) as group:
        pids = children(group)
        assert len(pids) == 2, pids

        async def scenario() -> None:
            async with readers_on_both(port, room, pids) as readers:
                gauge = 'gateway_connections{protocol="websocket"}'
                for _ in range(6):  # whichever child answers, the sum of both
                    assert await asyncio.to_thread(metric, port, gauge) == len(readers)
                await post(port, room, "to all")
                for ws in readers:  # on both processes: the post went through the Redis layer
                    assert (await receive(ws))["message"] == "to all"

        asyncio.run(scenario())
    assert "stopping 2 processes" in group.output
    assert gone(pids)
    with pytest.raises(ConnectionRefusedError):  # the parent's socket is closed with it
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_process_that_dies_is_replaced_and_the_port_keeps_answering(group_env):
    port, room = free_port(), unique("group")
    with running_group(group_env, port) as group:
        victim, survivor = pids = children(group)

        async def scenario() -> None:
            async with readers_on_both(port, room, pids) as readers:
                lost = serving(port)[victim]
                psutil.Process(victim).kill()
                # Made at once, while the parent replaces it: accepted by the survivor, or queued for the new one.
                status, body = await asyncio.to_thread(http_json, "GET", f"http://127.0.0.1:{port}/healthz")
                assert status == 200, body
                await asyncio.to_thread(group.wait_for, f"process {victim} exited (-9); replaced by")
                await asyncio.to_thread(group.wait_for, UP, count=2, timeout=60)
                new = [pid for pid in children(group) if pid != survivor]
                assert len(new) == 1 and new[0] != victim, children(group)
                # The dead process's live gauges are forgotten: only the survivor's readers count.
                gauge = 'gateway_connections{protocol="websocket"}'
                await asyncio.to_thread(
                    wait_until,
                    lambda: metric(port, gauge) == len(readers) - lost,
                    10,
                    "the dead process's connections still counted",
                )
                async with readers_on_both(port, room, [survivor, new[0]]):  # the new one takes readers too
                    pass

        asyncio.run(scenario())


def test_processes_that_keep_dying_soon_after_starting_are_replaced_ever_later(group_env):
    """The first death is replaced at once; the next ones within a minute of their start wait 1 s, 2 s …,
    while the survivor serves the port."""
    port = free_port()
    with running_group(group_env, port) as group:
        survivor, victim = children(group)
        for ups, replaced in enumerate(("; replaced by", "replaced in 1 s", "replaced in 2 s"), start=2):
            psutil.Process(victim).kill()
            group.wait_for(f"process {victim} exited (-9)", timeout=30)
            assert http_json("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200  # the survivor answers
            group.wait_for(UP, count=ups, timeout=60)
            [said] = [line for line in group.lines if f"process {victim} exited" in line]
            assert replaced in said, said
            wait_until(lambda: metric(port, 'gateway_group_processes{state="up"}') == 2, 5, "both up")
            [victim] = [pid for pid in children(group) if pid != survivor]
        assert "(3 in a row within 60 s of starting)" in group.output
        # While a replacement waits, /metrics says the group is one short.
        psutil.Process(victim).kill()
        wait_until(lambda: metric(port, 'gateway_group_processes{state="up"}') == 1, 4, "one of two up")
        assert metric(port, 'gateway_group_processes{state="wanted"}') == 2
        group.wait_for(f"process {victim} replaced by", timeout=30)  # 4 s later


def test_a_process_that_cannot_start_stops_the_group_with_its_exit_code(group_env):
    group = start_group(group_env, free_port(), "no_such_module:application")
    try:
        started = time.monotonic()
        code = group.popen.wait(timeout=60)
    finally:
        stop_group(group)
    assert code not in (0, None), group.output
    assert "before it was ready: stopping the group" in group.output
    assert time.monotonic() - started < 30
    assert UP not in group.output


def test_more_than_one_process_needs_the_redis_layer(tmp_path):
    env = gateway_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")  # no REDIS_URL: in memory
    group = start_group(env, free_port())
    assert group.popen.wait(timeout=30) == 2
    assert "needs REDIS_URL" in group.output


def test_signals_reach_every_process_when_sent_to_the_parent_only(group_env):
    """SIGINT (a terminal's Ctrl-C sent to the parent alone) stops the group as SIGTERM does."""
    with running_group(group_env, free_port()) as group:
        pids = children(group)
        group.popen.send_signal(signal.SIGINT)
        assert group.popen.wait(timeout=30) == 0, group.output
    assert gone(pids)


def test_a_group_on_a_held_socket_leaves_it_listening_for_the_next_group(group_env):
    """gateway-asgi-held@.service's way, ``ASGI_PROCESSES=2`` and ``--fd``: two processes (and no more: the
    children are not groups themselves); the group stops without closing the socket it was handed, and a
    connection made before the next group runs waits in its backlog and is answered by that group."""
    held = socket.create_server(("127.0.0.1", 0), backlog=64)  # what systemd's gateway-asgi@.socket holds
    port, env = held.getsockname()[1], dict(group_env, ASGI_PROCESSES="2")
    argv = [PYTHON, "-m", "gateway.serve", "--fd", str(held.fileno()), "config.asgi:application"]
    first = Process(argv, env=env, pass_fds=(held.fileno(),)).start()
    second: Process | None = None
    try:
        first.wait_for(UP, timeout=60)
        assert len(psutil.Process(first.popen.pid).children(recursive=True)) == 2
        assert stop_group(first) == 0, first.output
        waiting = socket.create_connection(("127.0.0.1", port), timeout=60)  # no group runs: the backlog holds it
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        second = Process(argv, env=env, pass_fds=(held.fileno(),)).start()
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200"), second.output
        waiting.close()
    finally:
        if second is not None:
            assert stop_group(second) == 0, second.output
        held.close()


def test_a_parent_killed_outright_leaves_no_process_behind(group_env):
    """``kill -9`` of the parent (no SIGTERM to pass on): its processes are told by the kernel and stop."""
    port = free_port()
    group = start_group(group_env, port)
    pids: list[int] = []
    try:
        group.wait_for(UP, timeout=60)
        pids = children(group)
        group.kill()
        wait_until(lambda: gone(pids), 30, f"{pids} still running after their parent was killed")
    finally:
        stop_group(group)
        for pid in pids:  # orphans, if the test failed
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_reload_has_new_processes_listening_before_the_old_ones_stop(group_env):
    """SIGHUP: two new processes start beside the old ones; once they are ready the old ones stop, and their
    readers (told 1012) come back to the new ones and catch up, while the port never stops answering."""
    port, room = free_port(), unique("group")
    with running_group(group_env, port) as group:
        old = children(group)

        async def scenario() -> None:
            async with readers_on_both(port, room, old) as readers:
                polling = asyncio.create_task(asyncio.to_thread(healthz_until, port, group, "reloaded: "))
                group.popen.send_signal(signal.SIGHUP)
                for ws in readers:
                    assert await close_code(ws) == 1012  # service restart: come back
                assert await polling > 0  # every check answered 200 throughout
            # both old ones drained and exited cleanly
            await asyncio.to_thread(group.wait_for, " stopped (0)", count=2, timeout=30)
            new = children(group)
            assert len(new) == 2 and not set(new) & set(old), (old, new)
            await post(port, room, "after")
            back = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/{room}/", open_timeout=10)
            try:
                assert [m["message"] for m in (await receive(back, "history"))["messages"]][-1] == "after"
                assert set(serving(port)) <= set(new), (serving(port), new)
            finally:
                await back.close()

        asyncio.run(scenario())


async def close_code(ws, timeout: float = 60) -> int | None:
    """The code the server closes ``ws`` with (what it sends meanwhile, presence and all, read past)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def healthz_until(port: int, group: Process, text: str) -> int:
    """``/healthz`` over and over until ``text`` is in the group's output; how many answered (each must)."""
    answered = 0
    deadline = time.monotonic() + 60
    while text not in group.output:
        assert time.monotonic() < deadline, f"no {text!r} in 60 s:\n{group.output}"
        status, body = http_json("GET", f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        answered += 1
    return answered


def test_a_reload_to_a_broken_release_leaves_the_old_processes_serving(group_env, tmp_path):
    broken = tmp_path / "broken"
    port = free_port()
    with running_group(dict(group_env, RELEASE_BROKEN=str(broken)), port, "tests.release_app:application") as group:
        old = children(group)
        broken.touch()
        group.popen.send_signal(signal.SIGHUP)
        group.wait_for("reload abandoned", timeout=60)  # the other new one is told to stop too
        wait_until(lambda: sorted(children(group)) == sorted(old), 30, "the new processes did not stop")
        assert int(http_json("GET", f"http://127.0.0.1:{port}/pid")[1]) in old
        broken.unlink()  # the release fixed: this reload goes through
        group.popen.send_signal(signal.SIGHUP)
        group.wait_for("reloaded: ", timeout=60)
        wait_until(lambda: not set(children(group)) & set(old), 30, "the old processes did not stop")
        assert int(http_json("GET", f"http://127.0.0.1:{port}/pid")[1]) in children(group)
