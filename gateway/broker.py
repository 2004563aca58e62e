"""The embedded MQTT broker for machines without one (``make run``), enforcing ``gateway.devices``' rules.

The machine's Mosquitto when it is installed (MQTT 5 and 3.1.1), with a throwaway configuration and the
password and ACL files of ``manage.py mosquittofiles``, written at start; else amqtt (3.1.1 only), whose
plugins ask the database at every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from channels.db import database_sync_to_async
from django.conf import settings

from . import devices

logger = logging.getLogger(__name__)


class DeviceAuthPlugin(BaseAuthPlugin):
    """Devices log in with their passwords, the adapter with MQTT_URL's; anonymous only when rooms are open."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Any) -> bool:
        return await database_sync_to_async(devices.authenticate)(session.username, session.password)


class DeviceTopicPlugin(BaseTopicPlugin):
    """Devices publish into their rooms and hear them; nothing else."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None, action: Any = None) -> bool:
        username = session.username if session is not None else None
        return await database_sync_to_async(devices.may)(username, topic or "", action == Action.PUBLISH)


class AmqttBroker:
    """amqtt in this process: MQTT 3.1.1 only."""

    name = "amqtt broker, MQTT 3.1.1 only"
    mqtt5 = False

    async def start(self, host: str, port: int) -> None:
        self.broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
                "plugins": {f"{__name__}.DeviceAuthPlugin": {}, f"{__name__}.DeviceTopicPlugin": {}},
            }
        )
        await self.broker.start()

    async def shutdown(self) -> None:
        await self.broker.shutdown()


class MosquittoBroker:
    """The machine's ``mosquitto`` in a child process: MQTT 5 and 3.1.1. Devices and their rooms are
    read once, at start (as ``manage.py mosquittofiles`` writes them): restart after changing them."""

    START_TIMEOUT = 10.0
    mqtt5 = True

    def __init__(self, program: str) -> None:
        self.program = program
        self.name = "Mosquitto broker, MQTT 5 and 3.1.1"
        self.directory = tempfile.TemporaryDirectory(prefix="gateway-mosquitto-")
        self.process: subprocess.Popen | None = None

    async def start(self, host: str, port: int) -> None:
        passwords, acl = await database_sync_to_async(devices.mosquitto_files)()
        if settings.ROOMS_OPEN:  # the development profile: anonymous clients go anywhere (the lines before any user)
            acl = "topic readwrite #\n" + acl
        files = {"passwords": passwords, "acl": acl, "mosquitto.conf": self._config(host, port)}
        await asyncio.to_thread(self._write, files)
        self.process = self._spawn()
        deadline = asyncio.get_running_loop().time() + self.START_TIMEOUT
        while not await _answers(host, port):
            if self.process.poll() is not None or asyncio.get_running_loop().time() > deadline:
                await self.shutdown()
                raise RuntimeError(f"{self.program} did not start on {host}:{port} (see its output above)")
            await asyncio.sleep(0.05)  # polling its port, with a deadline

    def _write(self, files: dict[str, str]) -> None:
        """Readable by this user alone: the passwords file holds the devices' hashes."""
        for name, text in files.items():
            path = os.path.join(self.directory.name, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                file.write(text)

    def _spawn(self) -> subprocess.Popen:
        """Once, at start-up (a fork and exec, not a wait); on the loop's thread, since ``preexec_fn``
        is not safe from other threads. The program is the configured mosquitto, not outside input."""
        config = os.path.join(self.directory.name, "mosquitto.conf")
        return subprocess.Popen(  # noqa: S603
            [self.program, "-c", config], stdin=subprocess.DEVNULL, preexec_fn=_end_with_parent
        )

    def _config(self, host: str, port: int) -> str:
        lines = [
            f"listener {port} {host}",
            f"allow_anonymous {'true' if settings.ROOMS_OPEN else 'false'}",
            f"password_file {os.path.join(self.directory.name, 'passwords')}",
            f"acl_file {os.path.join(self.directory.name, 'acl')}",
            "persistence false",
            "max_queued_messages 10000",
            "set_tcp_nodelay true",  # no message held back by Nagle's algorithm (docs/mqtt.md, "Latency")
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:  # as root it would switch to the user "mosquitto", who cannot read the files
            lines.append(f"user {getpass.getuser()}")
        return "\n".join(lines) + "\n"

    async def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.directory.cleanup()


def _end_with_parent() -> None:
    """Linux: the broker is sent SIGTERM when the gateway ends, even killed with SIGKILL; otherwise it
    would hold the port, and the next ``make run`` would use it, with the devices of back then."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the broker may outlive a killed gateway
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


def choose_broker(choice: str) -> AmqttBroker | MosquittoBroker:
    """``MQTT_EMBEDDED_BROKER``: ``auto`` (Mosquitto when installed, else amqtt), ``mosquitto`` or ``amqtt``."""
    if choice not in ("auto", "mosquitto", "amqtt"):
        raise ValueError(f"MQTT_EMBEDDED_BROKER must be auto, mosquitto or amqtt, not {choice!r}")
    program = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if choice == "mosquitto" and program is None:
        raise RuntimeError("MQTT_EMBEDDED_BROKER is mosquitto, but no mosquitto program is installed")
    return MosquittoBroker(program) if program and choice != "amqtt" else AmqttBroker()


async def start_embedded_broker(url: str, choice: str = "auto") -> AmqttBroker | MosquittoBroker:
    """A broker on the address of ``url``: ``.name`` says which, ``await .shutdown()`` stops it."""
    parts = urlsplit(url)
    broker = choose_broker(choice)
    await broker.start(parts.hostname or "127.0.0.1", parts.port or 1883)
    return broker
