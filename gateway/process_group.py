"""``python -m gateway.serve --processes N``: N of the gateway's daphne processes on one listening socket.

One event loop lets a restart's 10,000 readers back in at one core's pace (docs/storm.md); several
processes taking connections from one socket's backlog share that work, as several systemd services with
one ``Sockets=`` unit do, but in one command and one service. This parent only holds the socket and
watches: it binds ``--bind``/``--port`` itself (or keeps the ``--fd`` it was handed) and starts N
children of ``python -m gateway.serve --fd K``, so a child that dies is replaced while the others, and
the socket's backlog, keep every new connection. SIGTERM or SIGINT goes on to every child, each drains
as it does alone, and the parent exits once all have. A child that dies within ``START_GRACE`` of its
start (a broken release, a bad option) stops the group, with its exit code, for the service manager to
see, rather than being started again and again.

``/metrics`` adds up the children through prometheus_client's multiprocess mode: the parent gives them
one fresh ``PROMETHEUS_MULTIPROC_DIR`` (or wipes the one it was given) and marks each dead child's live
gauges gone. ``/healthz`` is answered by whichever child takes the connection.

The parent imports neither Django's apps nor daphne: it stays a few megabytes.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("gateway.process_group")

START_GRACE = 10.0  # seconds: a child that dies sooner was never going to run
GROUP_PARENT = "GATEWAY_GROUP_PARENT"  # set for the children: their parent's pid
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"  # rooms would not reach across the children


@dataclass
class GroupOptions:
    """What the parent reads from ``gateway.serve``'s command line; ``child_args`` is the rest, for each child."""

    processes: int
    fd: int | None
    host: str
    port: int | None
    child_args: list[str] = field(default_factory=list)


def parse_group_options(args: list[str]) -> GroupOptions:
    """``--processes`` (``ASGI_PROCESSES`` by default) and where to listen, split from daphne's other options
    (handed to every child)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.serve", add_help=False, allow_abbrev=False)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--fd", type=int, dest="fd")
    parser.add_argument("-b", "--bind", dest="host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int)
    parser.add_argument("-u", "--unix-socket", dest="unix_socket")
    parser.add_argument("-e", "--endpoint", dest="endpoints", action="append", default=[])
    known, rest = parser.parse_known_args(args)
    if known.processes is None:
        from django.conf import settings  # the settings module only (no apps loaded)

        known.processes = settings.ASGI_PROCESSES
    if known.processes < 1:
        parser.error("--processes must be 1 or more")
    if known.processes > 1 and (known.unix_socket or known.endpoints or (known.fd is None) == (known.port is None)):
        parser.error("--processes above 1 listens on one TCP socket: give --port (and --bind) or --fd, nothing else")
    return GroupOptions(known.processes, known.fd, known.host, known.port, rest)


def bind_listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The socket the children share, bound as daphne would bind ``--bind``/``--port`` (with ``backlog``)."""
    family = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][0]
    listening = socket.create_server((host.strip("[]"), port), family=family, backlog=backlog)
    listening.set_inheritable(True)
    return listening


@dataclass
class Child:
    popen: subprocess.Popen
    started: float


class ProcessGroup:
    """N children of ``python -m gateway.serve --fd <fd>`` on the listening socket ``fd``, kept running."""

    def __init__(self, processes: int, fd: int, child_args: list[str], env: dict[str, str] | None = None) -> None:
        self.processes = processes
        self.fd = fd
        self.argv = [sys.executable, "-m", "gateway.serve", "--processes", "1", "--fd", str(fd), *child_args]
        self.env = dict(os.environ if env is None else env, **{GROUP_PARENT: str(os.getpid())})
        self.children: dict[int, Child] = {}
        self.exits: queue.Queue[tuple[int, int]] = queue.Queue()  # (pid, returncode), from a thread per child
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        """Start the children, replace any that dies, and return once all have stopped: 0 after SIGTERM
        when every child stopped cleanly, otherwise the first failing child's exit code (or 1)."""
        made_dir = self._metrics_dir()
        previous = {signum: signal.signal(signum, self._stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            for _ in range(self.processes):
                if not self.stopping:
                    self._start_child()
            announced = False
            while self.children:
                try:  # a signal handler runs meanwhile (a lock's wait is interrupted for it)
                    pid, code = self.exits.get(timeout=None if announced or self.stopping else self._until_settled())
                except queue.Empty:  # every child has outlived START_GRACE
                    logger.info(
                        "%d processes up on the listening socket (fd %d): %s", len(self.children), self.fd, self.pids()
                    )
                    announced = True
                    continue
                announced &= not self._reap(pid, code)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if made_dir is not None:
                shutil.rmtree(made_dir, ignore_errors=True)
        return self.exit_code

    def pids(self) -> list[int]:
        return list(self.children)

    def _metrics_dir(self) -> Path | None:
        """The children's shared metrics directory, emptied; returned if this group made it (to remove)."""
        given = self.env.get(MULTIPROC_DIR)
        if given:
            for stale in Path(given).glob("*.db"):  # a previous run's (prometheus_client asks for a wiped one)
                stale.unlink()
            return None
        made = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
        self.env[MULTIPROC_DIR] = str(made)
        return made

    def _start_child(self) -> int:
        popen = subprocess.Popen(self.argv, env=self.env, pass_fds=(self.fd,))  # noqa: S603 (our own command line)
        self.children[popen.pid] = Child(popen, time.monotonic())
        threading.Thread(target=lambda: self.exits.put((popen.pid, popen.wait())), daemon=True).start()
        if self.stopping:  # a SIGTERM came while it was starting: it was not among those told
            popen.send_signal(signal.SIGTERM)
        return popen.pid

    def _until_settled(self) -> float:
        return max(0.0, START_GRACE - (time.monotonic() - max(child.started for child in self.children.values())))

    def _reap(self, pid: int, code: int) -> bool:
        """Account for a child's exit; whether a new child was started in its place."""
        child = self.children.pop(pid)
        self._forget_metrics(pid)
        if self.stopping:  # killed by the SIGTERM passed on (it came before the child's own handler): a stop too
            if code not in (0, -signal.SIGTERM) and self.exit_code == 0:
                self.exit_code = exit_status(code)
            return False
        if time.monotonic() - child.started < START_GRACE:
            logger.error("process %d exited (%d) as it started: stopping the group", pid, code)
            self.exit_code = exit_status(code) or 1
            self._stop()
            return False
        logger.warning("process %d exited (%d); replaced by %d", pid, code, self._start_child())
        return True

    def _forget_metrics(self, pid: int) -> None:
        if self.env.get(MULTIPROC_DIR):
            from prometheus_client import multiprocess  # only here: the parent needs nothing else of it

            multiprocess.mark_process_dead(pid, self.env[MULTIPROC_DIR])

    def _stop(self, signum: int | None = None, frame: object = None) -> None:
        """Pass the stop on to every child (each drains as it would alone); start no more."""
        if not self.stopping and signum is not None:
            logger.info("stopping %d processes", len(self.children))
        self.stopping = True
        for child in list(self.children.values()):
            child.popen.send_signal(signal.SIGTERM)  # nothing if it has exited


def follow_group_parent() -> None:
    """In a group's child: be sent SIGTERM (and drain) when the parent dies, so that a parent killed outright
    (``kill -9``, out of memory) leaves no daphne serving behind it. Linux's ``PR_SET_PDEATHSIG``; elsewhere
    nothing. Then forget the parent, so nothing this process starts takes it for its own."""
    parent = os.environ.pop(GROUP_PARENT, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logger.warning("no signal when the group's parent dies: prctl failed (errno %d)", ctypes.get_errno())
    if os.getppid() != int(parent):  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def exit_status(code: int) -> int:
    """A child's exit code as a shell reports it: 128 + N for one killed by signal N."""
    return 128 - code if code < 0 else code


def run_group(options: GroupOptions) -> int:
    """The parent of ``--processes N``: the socket, then the children on it, until they have stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from django.conf import settings  # the settings module only (no apps loaded)

    if settings.CHANNEL_LAYERS["default"]["BACKEND"] == IN_MEMORY_LAYER:
        logger.error("--processes above 1 needs REDIS_URL: the in-memory channel layer is one process's own")
        return 2
    listening = None
    fd = options.fd
    if fd is None:
        listening = bind_listening_socket(options.host, int(options.port or 0), settings.LISTEN_BACKLOG)
        fd = listening.fileno()
    try:
        return ProcessGroup(options.processes, fd, options.child_args).run()
    finally:
        if listening is not None:
            listening.close()
