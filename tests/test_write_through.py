"""gateway/write_through.py, the opt-in patch of Twisted's TCP writes: written for the Twisted versions
it names, refused on any other. (It at work, and off by default: tests/test_footprint.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import write_through
from tests.support import ROOT


def test_the_installed_twisted_is_one_the_patch_was_checked_against():
    """Fails on an upgrade of Twisted: check the patch against the new tcp.Connection, then add it to TESTED."""
    assert write_through.twisted_version() in write_through.TESTED


def test_an_unknown_twisted_is_refused(monkeypatch):
    from twisted.internet import tcp

    monkeypatch.setattr(write_through, "twisted_version", lambda: "99.1.0")
    before = tcp.Connection.write
    with pytest.raises(write_through.UnknownTwistedVersion, match="99.1.0"):
        write_through.install()
    assert tcp.Connection.write is before


def test_the_gateway_server_refuses_to_start_with_it_on_an_unknown_twisted():
    script = (
        "from gateway import write_through\n"
        "write_through.TESTED = ('0.0.0',)\n"
        "from gateway.server import GatewayServer\n"
        "GatewayServer(None, endpoints=['tcp:port=0:interface=127.0.0.1'], write_through=True).run()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "UnknownTwistedVersion" in done.stderr
