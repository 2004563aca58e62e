"""The servers under test and what they need, started and stopped here; their CPU and memory sampled here.

Everything is the bench's own: a fresh PostgreSQL database, a throwaway Mosquitto on a free port,
Redis keys under a unique prefix (deleted at the end), free ports. ``Cleanup`` undoes each step in
reverse order, whatever happened, so no process outlives a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

# The tests' own: a port's first accept with a deadline; the machine's PostgreSQL administrator.
from tests.support import find_postgres_admin, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PR_SET_PDEATHSIG = 1
logger = logging.getLogger("bench")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Cleanup:
    """Undo steps, newest first, each one even when another fails."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def add(self, name: str, step: Callable[[], object]) -> None:
        self._steps.append((name, step))

    def close(self) -> None:
        while self._steps:
            name, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                logger.warning("cleanup of %s failed: %r", name, exc)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench itself dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server in its own process; its output goes to a log file (a pipe nobody reads could stall it)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, pass_fds: tuple[int, ...] = ()
    ) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.pass_fds = pass_fds  # a listening socket it is handed (the gateway's daphne with --fd)
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self, cleanup: Cleanup) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                pass_fds=self.pass_fds,
            )
        cleanup.add(self.name, self.stop)
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for_output(self, text: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before {text!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} never printed {text!r} in {timeout}s:\n{self.tail()}")
            time.sleep(0.05)  # polling a log file, with a deadline

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, as a service manager would; SIGKILL if that does not end it."""
        if not self.alive():
            return
        self.terminate()
        self.wait_stopped(timeout)

    def terminate(self) -> None:
        """SIGTERM only (once: a second one to a draining daphne would not be a restart's)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 15) -> None:
        """Until it has exited after ``terminate``; SIGKILL at ``timeout``."""
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop on SIGTERM in %ss: killed", self.name, timeout)
            for child in _processes([self.popen.pid])[1:]:  # a --processes group's children too
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            self.popen.kill()
            self.popen.wait()


CPU_PERIOD_US = 20_000  # a short quota period: a throttled server waits at most 20 ms, not the default 100


def limit_cores(process: ServerProcess, cores: float, cleanup: Cleanup) -> None:
    """Hold a running server to ``cores`` CPUs with a cgroup CPU quota, as if it had a machine of that
    size to itself (undone at cleanup). The cgroup v1 ``cpu`` controller, or cgroup v2 at its root;
    both need root."""
    quota = max(1000, round(cores * CPU_PERIOD_US))
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    name = f"bench-{process.name}-{process.pid}"
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            parent, group = v1, v1 / name
            group.mkdir()
            (group / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        elif "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
            parent, group = v2, v2 / name
            group.mkdir()
            (group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        else:
            raise OSError("no cgroup cpu controller here")
        (group / "cgroup.procs").write_text(str(process.pid))  # every thread of it, and those it starts
    except OSError as exc:
        raise RuntimeError(
            f"could not hold {process.name} to {cores} cores ({exc}): run the bench as root on a machine with "
            "the cgroup cpu controller, or pass --scaleout-cores 0 to measure without a limit"
        ) from exc

    def release() -> None:
        if process.alive():
            (parent / "cgroup.procs").write_text(str(process.pid))
        group.rmdir()

    cleanup.add(f"{process.name}'s CPU limit", release)


def wait_for_http(url: str, process: ServerProcess, timeout: float = 60) -> None:
    """Until ``url`` answers 200 (the gateway's /healthz: listening, database and Redis reachable)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError) as exc:
            last = exc
        if not process.alive():
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} not serving {url} after {timeout}s ({last!r}):\n{process.tail()}")
        time.sleep(0.1)


# Services the servers need


def create_database(cleanup: Cleanup) -> str:
    """A fresh PostgreSQL database for this run (dropped at the end); its URL."""
    import psycopg

    user, admin = find_postgres_admin()
    name = unique("bench_")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    cleanup.add(f"database {name}", drop)
    return f"postgres://{user}@127.0.0.1:5432/{name}"


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete this run's channel-layer keys (and only those: the prefix is unique to the run)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def start_mosquitto(cleanup: Cleanup, log_dir: Path) -> tuple[str, ServerProcess]:
    """A throwaway Mosquitto on a free port, closed to anonymous clients; its URL, with its one account
    (the production profile refuses an anonymous MQTT_URL: gateway.E003). The bench's publishers use it too.

    Its queue per client is raised from 1000 to 1,000,000 messages: the ingest scenario publishes
    faster than the adapter takes them, and the broker must not be what loses them. Nagle's algorithm
    off (``set_tcp_nodelay``), as deploy/mosquitto/mosquitto.conf and the embedded broker have it.
    """
    port = free_port()
    password = secrets.token_urlsafe(16)
    passwords = log_dir / "mosquitto.passwords"
    passwords.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "gateway", password], check=True, capture_output=True)
    config = log_dir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\nallow_anonymous false\npassword_file {passwords}\n"
        "max_queued_messages 1000000\npersistence false\nset_tcp_nodelay true\n"
    )
    process = ServerProcess("mosquitto", ["mosquitto", "-c", str(config)], dict(os.environ), log_dir).start(cleanup)
    wait_for_port(port, process.alive)
    return f"mqtt://gateway:{password}@127.0.0.1:{port}", process


def start_mosquitto_ws(binary: Path, cleanup: Cleanup, log_dir: Path) -> tuple[int, int, ServerProcess]:
    """A Mosquitto built with WebSockets (``bench/mosquitto_ws.py``): a WebSocket listener for the readers
    and a TCP one for the publisher, anonymous (both on 127.0.0.1, for this run only); the two ports."""
    tcp, ws = free_port(), free_port()
    config = log_dir / "mosquitto-ws.conf"
    config.write_text(
        f"listener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\nuser {getpass.getuser()}\n"
        "allow_anonymous true\nmax_queued_messages 1000000\npersistence false\nset_tcp_nodelay true\n"
    )
    process = ServerProcess("mosquitto-ws", [str(binary), "-c", str(config)], dict(os.environ), log_dir).start(cleanup)
    wait_for_port(ws, process.alive)
    wait_for_port(tcp, process.alive)
    return ws, tcp, process


# The gateway


def gateway_env(database_url: str, redis_url: str, prefix: str, mqtt_url: str, **settings: object) -> dict[str, str]:
    """The production profile (DEBUG off, checks satisfied), rate limits off, a small join history."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL", "MQTT_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CHANNEL_LAYER_PREFIX=prefix,
        MQTT_URL=mqtt_url,
        WEBSOCKET_RATE="0",
        DEVICE_RATE="0",
        ROOM_RATE="0",
        MAIL_SENDER_RATE="0",
        HISTORY_ON_JOIN="1",
        # The opt-in write-through (gateway/write_through.py), as the figures in README were measured;
        # TWISTED_WRITE_THROUGH=false in the environment measures without it.
        TWISTED_WRITE_THROUGH=os.environ.get("TWISTED_WRITE_THROUGH", "true"),
    )
    env.update({key: str(value) for key, value in settings.items()})
    return env


def run_python(env: dict[str, str], *args: str) -> str:
    """Run ``python ARGS`` from the project root to completion (a management command, a bench module); its
    output, or an error with everything it printed."""
    done = subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def start_gateway_daphne(
    name: str,
    env: dict[str, str],
    cleanup: Cleanup,
    log_dir: Path,
    port: int | None = None,
    fd: int | None = None,
    processes: int = 1,
) -> tuple[int, ServerProcess]:
    """``python -m gateway.serve config.asgi:application`` (the gateway's daphne) on ``port`` (a free one by
    default; or on the listening socket ``fd``, bound to ``port``), returned once /healthz says ok."""
    port = port or free_port()
    process = launch_gateway_daphne(name, env, cleanup, log_dir, port, fd, processes)
    wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
    return port, process


def launch_gateway_daphne(
    name: str,
    env: dict[str, str],
    cleanup: Cleanup,
    log_dir: Path,
    port: int,
    fd: int | None = None,
    processes: int = 1,
) -> ServerProcess:
    """The gateway's daphne on ``port``, started (not waited for); with ``fd``, on that listening socket
    (the bench's, held across restarts as systemd's socket unit holds it: ``--fd``, passed to the child).
    ``processes`` above 1: that many on the one socket, under one parent (``--processes``)."""
    where = ["-b", "127.0.0.1", "-p", str(port)] if fd is None else ["--fd", str(fd)]
    group = ["--processes", str(processes)] if processes > 1 else []
    argv = [PYTHON, "-m", "gateway.serve", *group, *where, "config.asgi:application"]
    return ServerProcess(name, argv, env, log_dir, () if fd is None else (fd,)).start(cleanup)


READY_LINE = "Listening on TCP address"  # daphne's, once its port listens (or the socket it was handed is adopted)


def ready_at(process: ServerProcess, timeout: float = 60, nth: int = 1) -> float:
    """``time.time()`` of the gateway daphne's ready line (its own log timestamp, milliseconds): from then
    on it accepts connections, its own port or a socket it was handed. ``nth``: of a ``--processes`` group's."""
    return logged_at(process, READY_LINE, timeout, nth)


def logged_at(process: ServerProcess, text: str, timeout: float = 60, nth: int = 1) -> float:
    """``time.time()`` of the ``nth`` log line with ``text`` in it, by the line's own timestamp."""
    process.wait_for_output(text, timeout, count=nth)
    line = [line for line in process.output().splitlines() if text in line][nth - 1]
    stamp, millis = line[:23].split(",")  # logging's asctime: "2026-12-05 14:54:44,224", local time
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def wait_for_listening(port: int, process: ServerProcess, timeout: float = 60) -> float:
    """``time.time()`` when a TCP connection to ``port`` first succeeds: the process listens (its
    handshakes may still wait in the listen backlog)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return time.time()
        except OSError:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} not listening on {port} after {timeout}s") from None
            time.sleep(0.005)  # polling for the port, with a deadline


def start_adapter(command: str, env: dict[str, str], cleanup: Cleanup, log_dir: Path, ready: str) -> ServerProcess:
    """``manage.py runmqtt`` or ``runsmtp``, returned once it says ``ready``."""
    process = ServerProcess(command, [PYTHON, "manage.py", command], env, log_dir).start(cleanup)
    process.wait_for_output(ready)
    process.wait_for_output("Quit with Ctrl-C.")
    return process


# The baseline


def start_baseline_daphne(
    name: str, redis_url: str, prefix: str, cleanup: Cleanup, log_dir: Path
) -> tuple[int, ServerProcess]:
    """The tutorial chat under daphne on a free port, returned once it accepts connections."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("REDIS_", "DATABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.baseline.settings",
        PYTHONUNBUFFERED="1",
        BASELINE_REDIS_URL=redis_url,
        BASELINE_CHANNEL_PREFIX=prefix,
    )
    argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.baseline.asgi:application"]
    process = ServerProcess(name, argv, env, log_dir).start(cleanup)
    wait_for_port(port, process.alive)
    return port, process


# Other ASGI servers (the handshakes scenario's trivial application under each)

ASGI_SERVERS = {
    "gateway-daphne": ["-m", "gateway.serve"],  # the gateway's daphne (gateway.server.GatewayServer)
    "daphne": ["-m", "daphne"],
    "uvicorn": ["-m", "uvicorn", "--log-level", "warning", "--no-access-log", "--lifespan", "off"],
}


def start_asgi(
    name: str, server: str, application: str, env: dict[str, str], cleanup: Cleanup, log_dir: Path
) -> tuple[int, ServerProcess]:
    """``application`` under one of ``ASGI_SERVERS`` on a free port, returned once it accepts connections."""
    port = free_port()
    bind = ["--host", "127.0.0.1", "--port", str(port)] if server == "uvicorn" else ["-b", "127.0.0.1", "-p", str(port)]
    process = ServerProcess(name, [PYTHON, *ASGI_SERVERS[server], *bind, application], env, log_dir).start(cleanup)
    wait_for_port(port, process.alive, timeout=60)
    return port, process


# Sampling


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            found.append(process)
            found.extend(process.children(recursive=True))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes (and their children, and all their threads)."""
    total = 0.0
    for process in _processes(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    result = {}
    for pid in pids:
        result[pid] = cpu_seconds([pid])
    return result


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def bench_broker_pids(log_dir: Path) -> list[int]:
    """The bench's own Mosquitto (its configuration is in ``log_dir``), not the machine's."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "mosquitto" and str(log_dir) in " ".join(process.info["cmdline"] or ()):
            found.append(process.pid)
    return found


def named_pids(name: str) -> list[int]:
    """PIDs of the machine's processes called ``name`` (redis-server, postgres), for information only."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]


def wait_until_idle(pids: list[int], *, below: float = 0.03, interval: float = 0.5, timeout: float = 300) -> float:
    """Wait until these processes use less than ``below`` of a core over ``interval``; the seconds waited.

    After many joins or leaves the servers keep working for a while (presence announcements, group
    cleanup): measuring before they are done would charge that work to the next phase.
    """
    started = time.monotonic()
    before = cpu_seconds(pids)
    while time.monotonic() - started < timeout:
        time.sleep(interval)
        after = cpu_seconds(pids)
        if (after - before) / interval < below:
            break
        before = after
    return time.monotonic() - started
