"""The package's own fixtures: Django configured just enough for Channels (unless a project has done it),
and a throwaway Mosquitto. Nothing here comes from the gateway, so these tests run from the built wheel."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
    django.setup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listening on {port}") from None
            time.sleep(0.02)  # polling a port with a deadline


@pytest.fixture
def broker() -> Iterator[str]:
    """A Mosquitto of the test's own on a free port: its URL."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as config, tempfile.TemporaryFile("w+") as log:
        config.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
        config.flush()
        process = subprocess.Popen(["mosquitto", "-c", config.name], stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_for_port(port)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def smtp_port() -> int:
    return free_port()


def pytest_report_header() -> str:
    import protocols

    return f"protocols from {os.path.dirname(protocols.__file__)}"
