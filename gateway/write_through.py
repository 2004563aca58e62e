"""Opt-in (``TWISTED_WRITE_THROUGH``, off by default): a write to a TCP connection with nothing queued
goes straight to the socket, for every TCP connection in the process.

Twisted queues every ``transport.write`` and sends it when the reactor next finds the socket writable,
which on the asyncio reactor costs two selector changes (start and stop watching for writability) per
write. Here a write to a connection with nothing queued goes straight to ``send``; whatever the kernel
does not take (or any error) goes through Twisted's queue as before, so order, back-pressure and
connection loss behave as they always did.

This is a **patch** of ``twisted.internet.tcp.Connection.write`` that reads Twisted's private buffers,
so it is written for the Twisted versions in ``TESTED`` only: ``install()`` refuses any other (a test
fails on an unknown version). What it buys, and the upstream idea that would replace it, are in
docs/daphne-upstream.md.
"""

from __future__ import annotations

from typing import Any

TESTED = ("26.10.0",)  # the Twisted versions whose tcp.Connection this was checked against

_installed = False


class UnknownTwistedVersion(RuntimeError):
    """The installed Twisted is not one the patch was checked against."""


def twisted_version() -> str:
    import twisted

    return twisted.__version__


def install() -> None:
    """Patch ``tcp.Connection.write`` (plain TCP; TLS keeps its own path). Idempotent; raises
    ``UnknownTwistedVersion`` on a Twisted not in ``TESTED``."""
    global _installed
    if _installed:
        return
    if twisted_version() not in TESTED:
        raise UnknownTwistedVersion(
            f"TWISTED_WRITE_THROUGH is written for Twisted {', '.join(TESTED)}, found {twisted_version()}: "
            "turn it off, or check gateway/write_through.py against this version and add it to TESTED"
        )
    from twisted.internet import tcp

    queued_write = tcp.Connection.write

    def write(self: Any, data: bytes) -> None:
        if (
            data
            and isinstance(data, bytes)
            and not self.TLS
            and self.connected
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
        ):  # (a producer, such as the HTTP channel every connection starts as, is paused only by a queue)
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent >= 0:
                if sent == len(data):
                    return
                data = data[sent:]
            # an error: queued, so that Twisted's own write finds it and closes the connection
        queued_write(self, data)

    tcp.Connection.write = write
    _installed = True
