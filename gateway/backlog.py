"""A slow reader costs only itself: a bound, in bytes, on what one reader's connection holds unsent.

A reader that stops reading (a stalled client, a network path that died unnoticed) would otherwise have
every message of its room kept for it in the server's memory until a ping timeout closes it. Twisted
tells a connection's registered streaming producer when to stop and when to go on (``IPushProducer``):
``pauseProducing()`` once the connection's write buffer holds more than its ``bufferSize`` (64 KiB;
that is, after the kernel's socket buffers have filled too), ``resumeProducing()`` once it is empty
again. A ``Backlog`` is that producer. While it is paused, the writer counts what it hands over; past
``READER_MAX_BACKLOG`` bytes the backlog calls ``overflow`` once, and the reader is closed: it reconnects
with the last id it saw and catches up from the history. So a connection holds at most its buffer
size, that limit and one batch in the process (and what the kernel holds, outside it). A reader whose
buffer never empties while it is written to (it keeps falling behind) is closed the same way.

While a reader keeps up, the cost on the write path is one attribute check (``paused``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

DEFAULT_MAX_BACKLOG = 1024 * 1024


def max_backlog() -> int:
    """``READER_MAX_BACKLOG`` from the settings, or its default where Django is not configured."""
    from django.conf import settings

    return getattr(settings, "READER_MAX_BACKLOG", DEFAULT_MAX_BACKLOG) if settings.configured else DEFAULT_MAX_BACKLOG


@implementer(IPushProducer)
class Backlog:
    """Counts the bytes written to one connection while Twisted has it paused (its buffer is full)."""

    __slots__ = ("limit", "held", "paused", "overflow")

    def __init__(self, limit: int, overflow: Callable[[], None]) -> None:
        self.limit = limit
        self.held = 0
        self.paused = False
        self.overflow: Callable[[], None] | None = overflow

    def take(self, size: int) -> bool:
        """Count ``size`` bytes handed over while paused. False past the limit: they must not be written,
        and ``overflow()`` has been called (once)."""
        self.held += size
        if self.held <= self.limit:
            return True
        overflow, self.overflow = self.overflow, None
        if overflow is not None:
            overflow()
        return False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.held = 0

    def stopProducing(self) -> None:
        """The connection is gone; its reader's disconnect cleans up."""

    def __repr__(self) -> str:
        return f"<Backlog held={self.held} limit={self.limit} paused={self.paused}>"


def watch_connection(transport: Any, limit: int, overflow: Callable[[], None]) -> Backlog:
    """A ``Backlog`` for a connection of its own (an upgraded WebSocket). It replaces the producer daphne's
    HTTP channel registered before the upgrade, whose pause and resume no longer change anything."""
    backlog = Backlog(limit, overflow)
    transport.unregisterProducer()
    transport.registerProducer(backlog, True)
    return backlog


class ResponseBacklog(Backlog):
    """A ``Backlog`` for a streamed HTTP response (``twisted.web`` ``Request``), which forwards its channel's
    pause and resume. The response can be ended for a reader too far behind (``release``, then the
    application ends the response, then ``close``)."""

    __slots__ = ("request", "channel", "transport")

    def __init__(self, request: Any, limit: int, overflow: Callable[[], None]) -> None:
        super().__init__(limit, overflow)
        self.request, self.channel, self.transport = request, request.channel, request.transport
        request.registerProducer(self, True)

    def release(self) -> None:
        """Unregister, as a ``Request`` wants before it finishes."""
        self.request.unregisterProducer()

    def close(self, grace: float) -> None:
        """Close the connection once what is queued has gone out; drop it (with what is queued) if the
        client has not taken it within ``grace`` seconds."""
        from twisted.internet import reactor

        self.channel.loseConnection()  # (the channel, not the transport: it unregisters, so the close is not held)
        reactor.callLater(grace, self.transport.abortConnection)  # a no-op once the connection is closed


def response_watcher(request: Any) -> Callable[[int, Callable[[], None]], ResponseBacklog]:
    """``watch(limit, overflow)`` for one of daphne's HTTP requests: what the HTTP extension offers."""

    def watch(limit: int, overflow: Callable[[], None]) -> ResponseBacklog:
        return ResponseBacklog(request, limit, overflow)

    return watch
