"""``python -m gateway.serve --processes N``: N of the gateway's daphne processes on one listening socket.

One event loop lets a restart's 10,000 readers back in at one core's pace (docs/storm.md); several
processes taking connections from one socket's backlog share that work, as several systemd services with
one ``Sockets=`` unit do, but in one command and one service. This parent only holds the socket and
watches: it binds ``--bind``/``--port`` itself (or keeps the ``--fd`` it was handed) and starts N
children of ``python -m gateway.serve --fd K``, each of which says when it listens (a pipe, ``READY_FD``).

- A child that dies is replaced, while the others, and the socket's backlog, keep every new connection:
  at once, unless children keep dying within a minute of starting (a request that crashes each one
  that takes it), where each replacement waits longer (1, 2, 4 … 30 s) rather than a start-up's
  second of CPU being spent again and again beside the children that serve. One that dies before it
  was ready (a broken release, a bad option) stops the group with its exit code, for the service
  manager to see.
- SIGTERM or SIGINT goes on to every child; each drains as it does alone, and the parent exits once all
  have.
- SIGHUP reloads: N new children (the code on disk now) start beside the old ones, and once all are ready
  the old ones are stopped, so their readers' reconnects (told 1012) find processes already listening.
  If a new one fails, or they are not ready within ``RELOAD_TIMEOUT``, they are stopped and the old ones
  go on serving.

``/metrics`` adds up the children through prometheus_client's multiprocess mode: the parent gives them
one fresh ``PROMETHEUS_MULTIPROC_DIR`` (or wipes the one it was given) and marks each dead child's live
gauges gone. The parent writes there too: ``gateway_group_processes``, how many processes listen
(``state="up"``) and how many the group runs (``state="wanted"``), fewer while a replacement waits.
``/healthz`` is answered by whichever child takes the connection.

The parent reads the settings module, but loads neither Django's apps nor daphne (~30 MB resident).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import logging.config
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("gateway.process_group")

RELOAD_TIMEOUT = 120  # seconds a reload's new processes have to be ready, or they are stopped again
STEADY_SECONDS = 60.0  # a child that dies sooner after it started counts towards a crash loop
RESTART_DELAYS = (0, 1, 2, 4, 8, 16, 30)  # seconds before the replacement of the 1st, 2nd … such child in a row
READY_FD = "GATEWAY_READY_FD"  # set for each child: the pipe it says READY_WORD on once it listens
READY_WORD = b"ready\n"
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
    child_args: list[str]


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
    started: float  # time.monotonic() when it was started
    ready: bool = False  # it said it listens (``READY_FD``)
    incoming: bool = False  # started by a reload, not yet serving in place of the others
    retiring: bool = False  # told to stop by a reload (or an aborted one): its exit is expected


class ProcessGroup:
    """N children of ``python -m gateway.serve --fd <fd>`` on the listening socket ``fd``, kept running.

    Everything happens in ``run``'s loop, one event at a time: a child ready, a child exited (each from a
    thread of its own) or a signal (its handler only queues it: ``SimpleQueue.put`` is reentrant)."""

    def __init__(self, processes: int, fd: int, child_args: list[str]) -> None:
        self.processes = processes
        self.fd = fd
        self.argv = [sys.executable, "-m", "gateway.serve", "--processes", "1", "--fd", str(fd), *child_args]
        self.env = dict(os.environ, **{GROUP_PARENT: str(os.getpid())})
        self.children: dict[int, Child] = {}
        self.events: queue.SimpleQueue[tuple[str, int, int]] = queue.SimpleQueue()  # (what, pid or signal, code)
        self.stopping = False
        self.reload_deadline: float | None = None  # while a reload waits for its new children
        self.replacements: list[tuple[float, int]] = []  # (when it is due, the pid it replaces): waiting
        self.quick_deaths = 0  # children in a row that died within STEADY_SECONDS of starting
        self.announced = False
        self.exit_code = 0
        self.gauge: Any = None  # gateway_group_processes, once the metrics directory is set (``run``)

    def run(self) -> int:
        """Start the children, replace any that dies, reload on SIGHUP, and return once all have stopped: 0
        after SIGTERM when every child stopped cleanly, otherwise the exit code of the first that failed
        (or of one that could not start)."""
        made_dir = self._metrics_dir()
        self.gauge = group_gauge(self.processes)
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._queue_signal) for signum in signals}
        try:
            for _ in range(self.processes):
                self._start_child()
            while self.children or self.replacements:
                try:
                    what, pid, code = self.events.get(timeout=self._until_next_deadline())
                except queue.Empty:
                    self._deadline_passed()
                    continue
                if what == "signal":
                    self._signalled(pid)
                elif what == "ready":
                    self._ready(pid)
                else:
                    self._exited(pid, code)
                self.gauge.labels("up").set(len(self.pids(ready=True, retiring=False)))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if made_dir is not None:
                shutil.rmtree(made_dir, ignore_errors=True)
        return self.exit_code

    def pids(self, **state: bool) -> list[int]:
        """The children's pids; with ``ready=True`` and the like, those in that state."""
        return [pid for pid, child in self.children.items() if all(getattr(child, k) == v for k, v in state.items())]

    def _metrics_dir(self) -> Path | None:
        """The children's shared metrics directory, emptied; returned if this group made it (to remove)."""
        given = self.env.get(MULTIPROC_DIR)
        if given:
            for stale in Path(given).glob("*.db"):  # a previous run's (prometheus_client asks for a wiped one)
                stale.unlink()
            return None
        made = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
        self.env[MULTIPROC_DIR] = os.environ[MULTIPROC_DIR] = str(made)  # the parent's own gauge too
        return made

    def _start_child(self, incoming: bool = False) -> int:
        said, says = os.pipe()  # the child writes to ``says`` once it listens
        env = dict(self.env, **{READY_FD: str(says)})
        try:
            popen = subprocess.Popen(self.argv, env=env, pass_fds=(self.fd, says))  # noqa: S603 (our own command line)
        finally:
            os.close(says)
        self.children[popen.pid] = Child(popen, time.monotonic(), incoming=incoming)
        threading.Thread(target=self._watch, args=(popen, said), daemon=True).start()
        if self.stopping:  # asked to stop while it was starting
            popen.send_signal(signal.SIGTERM)
        return popen.pid

    def _watch(self, popen: subprocess.Popen, said: int) -> None:
        """(A thread per child.) Queue its ready word, if it says it, then its exit."""
        with os.fdopen(said, "rb") as pipe:
            if pipe.read(len(READY_WORD)) == READY_WORD:
                self.events.put(("ready", popen.pid, 0))
        self.events.put(("exit", popen.pid, popen.wait()))

    def _queue_signal(self, signum: int, frame: object) -> None:
        self.events.put(("signal", signum, 0))

    def _signalled(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._reload()
        else:
            self._stop()

    def _ready(self, pid: int) -> None:
        child = self.children.get(pid)
        if child is None:
            return
        child.ready = True
        if self.reload_deadline is not None:
            if all(self.children[incoming].ready for incoming in self.pids(incoming=True)):
                self._finish_reload()
        elif not self.announced and all(child.ready for child in self.children.values()):
            logger.info("%d processes up on the listening socket (fd %d): %s", len(self.children), self.fd, self.pids())
            self.announced = True

    def _exited(self, pid: int, code: int) -> None:
        child = self.children.pop(pid)
        self._forget_metrics(pid)
        if self.stopping:  # killed by the SIGTERM passed on (it came before the child's own handler): a stop too
            if code not in (0, -signal.SIGTERM) and self.exit_code == 0:
                self.exit_code = exit_status(code)
        elif child.retiring:
            logger.info("process %d stopped (%d)", pid, code)
        elif child.incoming:  # never served: the release it runs is broken; the others go on
            self._abort_reload(f"new process {pid} exited ({code}) before it was ready")
        elif not child.ready:
            logger.error("process %d exited (%d) before it was ready: stopping the group", pid, code)
            self.exit_code = exit_status(code) or 1
            self._stop()
        else:
            self.announced = False
            self._replace(pid, code, time.monotonic() - child.started)

    def _replace(self, pid: int, code: int, lived: float) -> None:
        """A child that served has died: start another, at once, or after ``RESTART_DELAYS`` if children
        keep dying soon after they start."""
        self.quick_deaths = self.quick_deaths + 1 if lived < STEADY_SECONDS else 0
        delay = RESTART_DELAYS[min(max(self.quick_deaths - 1, 0), len(RESTART_DELAYS) - 1)]
        if not delay:
            logger.warning("process %d exited (%d); replaced by %d", pid, code, self._start_child())
            return
        self.replacements.append((time.monotonic() + delay, pid))
        logger.warning(
            "process %d exited (%d) %.0f s after it started (%d in a row within %.0f s of starting); replaced in %d s",
            pid, code, lived, self.quick_deaths, STEADY_SECONDS, delay,
        )  # fmt: skip

    def _reload(self) -> None:
        """SIGHUP: start a new set of children (a new release's code, from disk); once every one of them is
        ready, stop the old ones (each drains, and its WebSockets are told 1012 and come back to the new).
        Replacements still waiting are not made: the new set is whole, and a new release starts afresh."""
        if self.stopping or self.reload_deadline is not None:
            logger.warning("reload ignored: %s", "stopping" if self.stopping else "a reload is under way")
            return
        self.replacements.clear()
        self.quick_deaths = 0
        self.reload_deadline = time.monotonic() + RELOAD_TIMEOUT
        started = [self._start_child(incoming=True) for _ in range(self.processes)]
        logger.info("reloading: new processes %s; %s serve until they are ready", started, self.pids(incoming=False))

    def _finish_reload(self) -> None:
        old = self.pids(incoming=False, retiring=False)
        for pid in old:
            self.children[pid].retiring = True
            self.children[pid].popen.send_signal(signal.SIGTERM)
        for pid in self.pids(incoming=True):
            self.children[pid].incoming = False
        self.reload_deadline = None
        logger.info("reloaded: %s serve; %s stopping", self.pids(retiring=False), old)

    def _abort_reload(self, why: str) -> None:
        new = self.pids(incoming=True)
        for pid in new:
            self.children[pid].retiring = True
            self.children[pid].popen.send_signal(signal.SIGTERM)
        self.reload_deadline = None
        logger.error("reload abandoned, %s: %s go on serving", why, self.pids(retiring=False))

    def _until_next_deadline(self) -> float | None:
        """How long the loop may wait for an event: until a reload's deadline or a replacement's turn."""
        deadlines = [due for due, _ in self.replacements]
        if self.reload_deadline is not None:
            deadlines.append(self.reload_deadline)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _deadline_passed(self) -> None:
        now = time.monotonic()
        if self.reload_deadline is not None and self.reload_deadline <= now:
            self._abort_reload(f"its new processes were not ready in {RELOAD_TIMEOUT} s")
        for waiting in [waiting for waiting in self.replacements if waiting[0] <= now]:
            self.replacements.remove(waiting)
            logger.warning("process %d replaced by %d", waiting[1], self._start_child())

    def _forget_metrics(self, pid: int) -> None:
        if self.env.get(MULTIPROC_DIR):
            from prometheus_client import multiprocess  # only here: the parent needs nothing else of it

            multiprocess.mark_process_dead(pid, self.env[MULTIPROC_DIR])

    def _stop(self) -> None:
        """Pass the stop on to every child (each drains as it would alone); start no more."""
        if not self.stopping:
            logger.info("stopping %d processes", len(self.children))
        self.stopping = True
        self.reload_deadline = None  # a reload under way ends with everything else
        self.replacements.clear()
        for child in list(self.children.values()):
            child.popen.send_signal(signal.SIGTERM)  # nothing if it has exited


def group_gauge(processes: int) -> Any:
    """``gateway_group_processes``, written by the parent into the group's metrics directory (imported
    here, once ``PROMETHEUS_MULTIPROC_DIR`` is set: prometheus_client reads it when first imported)."""
    from prometheus_client import Gauge

    gauge = Gauge(
        "gateway_group_processes",
        "The group's processes: listening (up), and how many it runs (wanted)",
        ["state"],
        multiprocess_mode="livemax",
    )
    gauge.labels("up").set(0)
    gauge.labels("wanted").set(processes)
    return gauge


def tell_group_ready() -> None:
    """In a group's child, once it listens: say so to the parent (``READY_FD``), which announces the group
    up or, in a reload, stops the processes this one replaces. Elsewhere nothing."""
    says = os.environ.pop(READY_FD, None)
    if says is not None:
        with os.fdopen(int(says), "wb") as pipe:
            pipe.write(READY_WORD)


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
    from django.conf import settings  # the settings module only (no apps loaded)

    logging.config.dictConfig(settings.LOGGING)  # the children's format: one line a record (gateway/logs.py)

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
