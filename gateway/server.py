"""The gateway's daphne: a ``daphne.server.Server`` subclass that ``rungateway`` and ``python -m
gateway.serve`` start. Nothing is patched: a plain ``daphne config.asgi:application`` still serves
the same application, without these extras (the consumers fall back when an extension is absent).

What it adds, through public methods and attributes only (docs/architecture.md, docs/daphne-upstream.md):

- **Scope extensions** (``create_application``): ``gateway.websocket.frames`` and
  ``gateway.http.backlog`` (``gateway/daphne_io.py``).
- **Less per connection** (``gateway/footprint.py``): a lean input queue instead of ``asyncio.Queue``
  (``create_application`` is daphne 4.2's, with that queue; on another daphne, daphne's own is used),
  and a WebSocket protocol class holding autobahn's options, set as the factory's ``protocol``.
- **A deadline for a request's headers** (``HeaderDeadlineChannel``, the HTTP factory's ``protocol``):
  Twisted restarts its idle timer on every byte, so a client trickling a header a byte a second
  would hold a connection for hours. ``HTTP_HEADER_TIMEOUT`` bounds the whole header; a WebSocket or
  an event stream, whose headers are complete, is not affected.
- **Timeouts and close codes**: ``HTTP_IDLE_TIMEOUT`` (Twisted's idle timeout), and an oversized frame's
  connection closed with 1009, not dropped.
- **Pings spread** (``SpreadPingsProtocol``): each WebSocket's first ping at a moment of its own, not
  one ping for every connection opened together in the same look.
- **A settled heap** (``gateway/heap.py``): once ready, start-up's objects are frozen out of the
  garbage collector's scans and young objects are collected less often, as the adapter commands do.
- **Opt-in write-through** (``TWISTED_WRITE_THROUGH``, ``gateway/write_through.py``).
- **Admission instead of refusal** (``MAX_PENDING_HANDSHAKES``, ``gateway/admission.py``): new
  connections are accepted only while fewer WebSocket handshakes than that are in progress; the rest
  wait in the listen backlog, which is ``LISTEN_BACKLOG`` for every TCP or UNIX endpoint that does
  not say ``backlog=`` itself (Twisted's default is 50).
- **A drain on shutdown** (``kill_all_applications``, daphne's "before shutdown" step): on SIGTERM it
  stops listening first (a client's next connection is refused, so it goes to another daphne; on a
  listening socket it was handed, ``--fd`` as systemd's socket units pass it, it closes only its own
  copy: the socket stays open in its holder and the next connection waits in its backlog for the next
  process, tests/test_held_socket.py), tells
  every WebSocket 1012 ("service restart": it reconnects elsewhere with the last id it saw), answers
  the HTTP requests it has read (for at most ``HTTP_DRAIN_TIMEOUT``; meanwhile every response says
  ``Connection: close``), and only then cancels what is left as daphne does. Plain daphne cancels a
  post waiting for its commit: the message may be stored and the client, cut off without an answer,
  cannot tell.

The factories' options are final when the server is ready: they are set, then ``ready_callable`` runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from functools import partial
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server  # installs Twisted's asyncio reactor first
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import defer
from twisted.web.http import HTTPChannel, Request

from gateway import daphne_io, footprint, write_through
from gateway.admission import Admission
from gateway.heap import GC_THRESHOLD_ASGI, QuietCollector, settle_heap
from gateway.process_group import tell_group_ready

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
SERVICE_RESTART = 1012  # RFC 6455's registry: the client reconnects (to another process) and catches up
# How long a drain waits for the WebSockets it told 1012 to close: autobahn drops one whose client has not
# answered within its close handshake timeout (1 s), so this is only a bound.
CLOSE_WAIT = 3.0
LEAN_QUEUE = footprint.fits_this_daphne()
# How long an accepted connection that has not sent its request yet holds a place in admission: enough
# for a client to send it, not enough for silent connections to hold the server closed.
ADMISSION_GRACE = 1.0
BACKLOG_ENDPOINTS = (
    "tcp",
    "tcp6",
    "ssl",
    "unix",
)  # Twisted endpoint types that take ``backlog=``  # create_application below is daphne 4.2's, with an InputQueue


class SpreadPingsProtocol(WebSocketProtocol):
    """daphne's ``WebSocketProtocol``, each connection's pings at a moment of its own.

    daphne pings a connection ``ping_interval`` (20 s) after its last ping or message, and looks every 2
    s: connections opened together (a reconnect storm, a room's readers all back at once) are pinged in
    the same look, every 20 s for as long as they stay, and their pongs come back together. 1,000 of them
    held the event loop ~30 ms, a stall in every room's delivery (docs/rooms.md, "Pings"). Here each
    connection's first ping comes at a random moment within the interval, so each look pings about a
    tenth of them."""

    def onOpen(self) -> None:
        super().onOpen()
        self.last_ping -= random.random() * self.server.ping_interval  # noqa: S311 (a spread, not a secret)


class HeaderDeadlineChannel(HTTPChannel):
    """Twisted's HTTP/1.1 channel with a total deadline for each request's headers, from the connection
    (or the first byte of a later request on it) to the end of the headers; past it, the connection is
    answered 408 and closed. ``header_timeout`` is set on the subclass ``GatewayServer`` makes (0: no deadline).

    (Served over plain TCP: the gateway's TLS is nginx's. daphne's HTTP/2 needs TLS in daphne.)"""

    header_timeout: float = 10.0
    header_deadline: Any = None  # the pending call, while headers are awaited
    awaiting_headers: bool = True
    admission: Admission | None = None  # set on the subclass: the server's
    admission_grace: Any = None  # the pending call that gives up this connection's place in admission

    def connectionMade(self) -> None:
        super().connectionMade()
        self.start_header_deadline()
        if self.admission is not None:  # accepted: a place until its first request is read, or briefly
            self.admission.begin(self)
            self.admission_grace = self.callLater(ADMISSION_GRACE, self.admitted)

    def allContentReceived(self) -> None:
        super().allContentReceived()  # a WebSocket upgrade takes its own place (protocol_connected) in here
        self.admitted()

    def admitted(self) -> None:
        """This connection no longer holds a place in admission."""
        if self.admission_grace is not None:
            if self.admission_grace.active():
                self.admission_grace.cancel()
            self.admission_grace = None
        if self.admission is not None:
            self.admission.end(self)

    def dataReceived(self, data: bytes) -> None:
        if self.awaiting_headers and self.header_deadline is None:  # a later request on this connection
            self.start_header_deadline()
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self.awaiting_headers = False
        self.cancel_header_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        self.awaiting_headers = True  # the next request's deadline starts with its first byte

    def connectionLost(self, reason: Any) -> None:
        self.cancel_header_deadline()
        self.admitted()
        super().connectionLost(reason)

    def start_header_deadline(self) -> None:
        if self.header_timeout > 0:
            self.header_deadline = self.callLater(self.header_timeout, self.headers_overdue)

    def cancel_header_deadline(self) -> None:
        if self.header_deadline is not None:
            if self.header_deadline.active():
                self.header_deadline.cancel()
            self.header_deadline = None

    def headers_overdue(self) -> None:
        self.header_deadline = None
        if self.awaiting_headers and self.transport is not None:
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.loseConnection()


class GatewayServer(Server):
    """daphne's ``Server`` with the gateway's scope extensions, lean connections and header deadline.
    Its own options default to the Django settings of the same names (read when it runs)."""

    def __init__(
        self,
        application: Any,
        *,
        http_idle_timeout: float | None = None,
        http_header_timeout: float | None = None,
        http_drain_timeout: float | None = None,
        write_through: bool | None = None,
        max_pending_handshakes: int | None = None,
        listen_backlog: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(application, **options)
        self.http_idle_timeout = http_idle_timeout
        self.http_header_timeout = http_header_timeout
        self.http_drain_timeout = http_drain_timeout
        self.write_through = write_through
        self.max_pending_handshakes = max_pending_handshakes
        self.listen_backlog = listen_backlog
        self.admission = Admission(0)
        self.ports: list[Any] = []  # the listening ports, closed first on shutdown
        self.draining: asyncio.Future | None = None
        self.closing: set[Any] = set()  # the WebSockets a drain told 1012, until each has closed
        self.all_closed = asyncio.Event()

    def run(self) -> None:
        self.settings_defaults()
        if self.write_through:
            write_through.install()
        self.admission = Admission(int(self.max_pending_handshakes or 0))
        self.endpoints = [with_backlog(endpoint, int(self.listen_backlog or 0)) for endpoint in self.endpoints]
        then: Callable[[], None] | None = self.ready_callable

        def configure_then_ready() -> None:
            self.configure_factories()
            settle_heap(GC_THRESHOLD_ASGI)  # started: what is here now stays for the process's life
            self.quiet_collector = QuietCollector(asyncio.get_event_loop())
            self.quiet_collector.start()
            tell_group_ready()  # a --processes group's parent waits for this (gateway/process_group.py)
            if then is not None:
                then()

        self.ready_callable = configure_then_ready
        super().run()

    def settings_defaults(self) -> None:
        """Options not given are the Django settings' (``config/settings.py``), or these defaults."""
        from django.conf import settings

        configured = settings.configured
        if self.http_idle_timeout is None:
            self.http_idle_timeout = getattr(settings, "HTTP_IDLE_TIMEOUT", 30) if configured else 30
        if self.http_header_timeout is None:
            self.http_header_timeout = getattr(settings, "HTTP_HEADER_TIMEOUT", 10) if configured else 10
        if self.http_drain_timeout is None:
            self.http_drain_timeout = getattr(settings, "HTTP_DRAIN_TIMEOUT", 10) if configured else 10
        if self.write_through is None:
            self.write_through = getattr(settings, "TWISTED_WRITE_THROUGH", False) if configured else False
        if self.max_pending_handshakes is None:
            self.max_pending_handshakes = getattr(settings, "MAX_PENDING_HANDSHAKES", 100) if configured else 100
        if self.listen_backlog is None:
            self.listen_backlog = getattr(settings, "LISTEN_BACKLOG", 4096) if configured else 4096

    def configure_factories(self) -> None:
        """Set the factories ``Server.run`` made, before the first connection: their public options
        and the protocol classes they build."""
        self.ws_factory.setProtocolOptions(failByDrop=False)  # an oversized frame: 1009, not a bare drop
        self.http_factory.timeOut = self.http_idle_timeout
        self.http_factory.protocol = type(
            "HeaderDeadlineChannel",
            (HeaderDeadlineChannel,),
            {
                "header_timeout": float(self.http_header_timeout),
                "admission": self.admission if self.admission.limit > 0 else None,
            },
        )
        lean = footprint.lean_protocol(SpreadPingsProtocol)  # the factory's own is daphne's WebSocketProtocol
        self.ws_factory.protocol = footprint.protocol_for(self.ws_factory, lean)

    def create_application(self, protocol: Any, scope: dict) -> Any:
        """daphne 4.2's, with the gateway's scope extensions and a lean input queue."""
        scope["extensions"] = daphne_io.scope_extensions(protocol, scope)
        if not LEAN_QUEUE:
            return super().create_application(protocol, scope)
        assert "application_instance" not in self.connections[protocol]  # noqa: S101 (daphne's line, verbatim)
        input_queue = footprint.InputQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    async def handle_reply(self, protocol: Any, message: dict) -> None:
        """daphne's, but while draining every response says ``Connection: close``: a proxy stops sending
        requests over its kept-alive connections to a server about to close them."""
        if self.draining is not None and message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"Connection", b"close")]}
        await super().handle_reply(protocol, message)
        if message["type"] in ("websocket.accept", "websocket.close"):
            self.admission.end(protocol)  # the handshake is answered (or the socket closing)

    def protocol_connected(self, protocol: Any) -> None:
        """daphne's; a WebSocket's upgrade request has been read: its handshake is in progress."""
        super().protocol_connected(protocol)
        if isinstance(protocol, WebSocketProtocol):
            self.admission.begin(protocol)

    def protocol_disconnected(self, protocol: Any) -> None:
        """daphne's; and a request that has handed its connection to a WebSocket (its ``transport`` gone)
        leaves its HTTP channel's list of requests. Twisted keeps a request there until it is finished,
        and an upgraded one never is: the two held each other, ~20 objects a connection (the channel,
        the request, their headers, addresses and body buffer) that only a garbage collection could
        free. Now they are freed as soon as daphne lets go of the request (gateway/heap.py)."""
        super().protocol_disconnected(protocol)
        self.admission.end(protocol)
        if protocol in self.closing:
            self.closing.discard(protocol)
            if not self.closing:
                self.all_closed.set()
        channel = getattr(protocol, "channel", None)
        if channel is not None and protocol.transport is None:
            channel.requests.clear()

    def application_checker(self) -> None:
        """daphne's periodic check; also forgets handshakes that ended without a word (never expected)."""
        super().application_checker()
        self.admission.sweep(
            lambda protocol: (
                not isinstance(protocol, WebSocketProtocol)  # (a connection ends its own place)
                or (protocol in self.connections and protocol.state == protocol.STATE_CONNECTING)
            )
        )

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        self.admission.add_port(port)
        super().listen_success(port)

    def kill_all_applications(self) -> defer.Deferred:
        """daphne's "before shutdown" step, after the drain: what is still running is cancelled."""
        drained = defer.Deferred.fromFuture(self.drain())
        drained.addBoth(lambda _: Server.kill_all_applications(self))
        return drained

    def drain(self) -> asyncio.Future:
        """Stop listening, then wait (at most ``http_drain_timeout``) until every HTTP request read so far
        is answered. Started once; ``rungateway`` awaits it too, before it cancels the instances."""
        if self.draining is None:
            self.draining = asyncio.ensure_future(self._drain())
        return self.draining

    async def _drain(self) -> None:
        for port in self.ports:
            port.stopListening()  # an adopted socket (fd:) is not shut down, only this process's copy closed
        self.close_websockets()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.http_drain_timeout or 0)
        while (unanswered := self.unanswered_requests()) and (left := deadline - loop.time()) > 0:
            await asyncio.wait(unanswered, timeout=left)  # a request on a kept-alive connection: again
        if unanswered:
            logger.warning(
                "Stopping with %d HTTP requests unanswered after %ss", len(unanswered), self.http_drain_timeout
            )
        # Twisted's shutdown drops every connection with what is still in its write buffer: a close frame
        # not yet written would be lost, and its client see the connection cut (1006), not told 1012.
        if self.closing:
            try:
                await asyncio.wait_for(self.all_closed.wait(), CLOSE_WAIT)
            except TimeoutError:
                logger.warning("Stopping with %d WebSockets not closed after %ss", len(self.closing), CLOSE_WAIT)

    def close_websockets(self) -> None:
        """Tell every open WebSocket the server restarts (1012, a close handshake rather than a dropped
        connection): its client reconnects at once, to another daphne, with the last id it saw. The drain
        waits for them to close (``closing``): the client answers, or autobahn drops it after 1 s."""
        for protocol in list(self.connections):
            if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=SERVICE_RESTART, reasonUtf8=b"restarting: reconnect")
                self.closing.add(protocol)

    def unanswered_requests(self) -> list[asyncio.Future]:
        """The application instances of HTTP requests read whole and not answered yet (a request whose
        answer has begun, an event stream, and WebSockets are not waited for)."""
        return [
            details["application_instance"]
            for protocol, details in list(self.connections.items())
            if isinstance(protocol, Request)
            and not protocol.startedWriting
            and "application_instance" in details
            and not details["application_instance"].done()
        ]


def with_backlog(endpoint: str, backlog: int) -> str:
    """A Twisted endpoint description with a listen backlog of ``backlog``, unless it names one itself
    (or is of a type without one, such as ``fd:``; or ``backlog`` is 0)."""
    kind = endpoint.split(":", 1)[0]
    if backlog <= 0 or kind not in BACKLOG_ENDPOINTS or ":backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


class GatewayCommandLine(CommandLineInterface):
    """daphne's CLI (its documented ``server_class`` attribute) with the gateway's server (``python -m
    gateway.serve``). ``--processes`` is the parent's (gateway/process_group.py); here, at 1, it is read and ignored."""

    description = "Serve an ASGI application with the gateway's daphne server (gateway.server.GatewayServer)."
    server_class = GatewayServer

    def __init__(self) -> None:
        super().__init__()
        self.parser.add_argument(
            "--processes", type=int, help="Processes sharing the listening socket (--port or --fd); ASGI_PROCESSES"
        )
