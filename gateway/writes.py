"""Write-through for Twisted's TCP connections (daphne's transport): send at once when nothing is queued.

Twisted queues every ``transport.write`` and sends it when the reactor next finds the socket writable,
which on the asyncio reactor costs two selector changes (start and stop watching for writability) per
write. A room fan-out is one small write to each of many idle sockets, so that bookkeeping was the
largest share of a delivery's CPU. Here a write to a connection with nothing queued goes straight to
``send``; whatever the kernel does not take (or any error) goes through Twisted's queue as before,
so order, back-pressure and connection loss behave as they always did.
"""

from __future__ import annotations

from typing import Any

_installed = False


def install() -> None:
    """Patch ``twisted.internet.tcp.Connection.write`` (plain TCP; TLS keeps its own path). Idempotent."""
    global _installed
    if _installed:
        return
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
