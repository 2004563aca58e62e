"""Less of daphne's per-connection state kept for the life of a WebSocket (daphne 4.2, autobahn, Twisted).

An idle WebSocket costs memory for as long as it stays open, in every connection. Three things daphne
and its libraries kept per connection were most of what did not come from the application
(about 8 KB of the ~24 KB an idle connection held once the application's share was trimmed,
measured with tracemalloc):

- **The input queue.** daphne gives every connection an ``asyncio.Queue`` (three deques and an
  ``asyncio.Event`` with a fourth: about 3.2 KB, even when empty). It is only ever asked to
  ``put_nowait()`` and ``get()``; ``InputQueue`` does just that, FIFO, with asyncio.Queue's
  cancellation rules, and holds nothing while empty and no one waits.
- **Autobahn's options, copied into each connection.** ``WebSocketProtocol._connectionMade`` copies the
  factory's ~30 protocol options into every instance unless the class already has them. That
  pushed each connection's ``__dict__`` to ~100 attributes, a hash table of 3.3 KB where 70 need
  1.6 KB. Here each factory's connections get a protocol subclass holding the options as class
  attributes, rebuilt when the factory's options change, so connections read the same values.
- **The HTTP request the connection started as.** daphne upgrades a connection from Twisted's
  ``HTTPChannel``, which stays registered as the TCP transport's producer, holding its
  ``Request`` (headers twice, the body buffer, addresses): about 2 KB. After the upgrade the
  channel's pause and resume change nothing (it is mid-request, so it never pauses the socket),
  and nothing else reads it, so once the handshake is over it is unregistered. (It also no longer
  delays a close after a full send buffer, which a paused producer did.) The opening handshake's
  raw request and response text are let go at the same time, and so are its parsed headers (autobahn's
  dict, daphne's list, the request's copy) and query.
- **State every open connection holds alike.** Even without the options, autobahn, daphne and Twisted
  set ~70 attributes on each connection, most of them the same for all once it is open: close flags
  (False), pending timers and close codes (None), handshake leftovers. ``SHARED_AT_OPEN`` puts these
  values on the class and drops a connection's own copy while it still equals them, which leaves
  ~26 attributes: a 64-slot table (0.8 KB) instead of 128 (1.6 KB), with room for the ~13 autobahn
  sets once frames arrive. Setting one (a close, a frame) makes it the connection's own again.
- **Autobahn's send queue** (``SendQueue``): a ``deque`` of chopped or synchronous sends waiting for the
  reactor, empty nearly always, yet holding a 64-slot block (~600 bytes); replaced, while empty, at open.

With what ``consumers/lean.py`` trims on the application's side, an idle connection went from 17.3
to ~8.5 KB of RSS (``make bench``'s connections scenario; ``python -m bench.memprobe`` shows the rest).

``gateway.server.GatewayServer`` uses these for the connections it serves (nothing is patched: a plain
``daphne`` keeps its own queue and protocol).
"""

from __future__ import annotations

import asyncio
import collections
from types import FunctionType, MappingProxyType
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

DAPHNE_SERIES = "4.2."  # GatewayServer.create_application is this daphne's, with an InputQueue


NOTHING: MappingProxyType = MappingProxyType({})  # what a handshake-only mapping becomes once it is over


def fits_this_daphne() -> bool:
    """Whether the installed daphne is the one ``GatewayServer.create_application`` copies."""
    import daphne

    return daphne.__version__.startswith(DAPHNE_SERIES)


class InputQueue:
    """The part of ``asyncio.Queue`` daphne uses for a connection's events: unbounded, FIFO,
    ``put_nowait()`` from daphne and ``get()`` from the application, several getters served in turn.
    Nothing is allocated while it is empty and nobody waits. (It is always true, as a Queue is: daphne
    tests ``if self.application_queue:``.)"""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: collections.deque | None = None
        self._getters: list[asyncio.Future] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._wakeup_next()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:  # as asyncio.Queue.get: pass a wake-up it cannot take on to the next getter
                getter.cancel()
                if self._getters is not None and getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wakeup_next()
                raise
            finally:
                if not self._getters:
                    self._getters = None
        return self.get_nowait()

    def _wakeup_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not self._getters:
            self._getters = None

    def __repr__(self) -> str:
        return f"<InputQueue at {id(self):#x} items={self.qsize()} getters={len(self._getters or ())}>"


class SendQueue:
    """autobahn's ``send_queue``, the queue of chopped or synchronous sends waiting for the reactor: it
    is only appended to, popped from the left and measured, and almost always empty. A ``deque`` holds
    a 64-slot block (~600 bytes) even when empty; this holds a deque only while something waits."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: collections.deque | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items else 0

    def append(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)

    def popleft(self) -> Any:
        if not self._items:
            raise IndexError("pop from an empty queue")
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


# What every open connection holds alike once the handshake is over: autobahn's close flags and pending
# timers (None or False until something happens), the handshake's leftovers. As class attributes, a
# connection reads them from the class until it sets its own (``LeanWebSocketProtocol.share_state``).
SHARED_AT_OPEN: dict[str, Any] = {
    **dict.fromkeys(
        (
            "autoPingPending",
            "autoPingPendingCall",
            "autoPingPendingSent",
            "autoPingTimeoutCall",
            "closeHandshakeTimeoutCall",
            "current_frame",
            "http_request_data",
            "http_request_host",
            "http_request_path",
            "http_request_uri",
            "http_response_data",
            "http_status_line",
            "localCloseCode",
            "localCloseReason",
            "openHandshakeTimeoutCall",
            "protocol_to_accept",
            "remoteCloseCode",
            "remoteCloseReason",
            "trackedTimings",
            "wasNotCleanReason",
            "application_deferred",  # daphne's, fired when the application was made
            "websocket_origin",
            "websocket_protocol_in_use",
        ),
        None,
    ),
    **dict.fromkeys(
        (
            "closedByMe",
            "droppedByMe",
            "failedByMe",
            "inside_message",
            "triggered",
            "wasClean",
            "wasCloseHandshakeTimeout",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "wasOpenHandshakeTimeout",
            "wasServerConnectionDropTimeout",
            "wasServingFlashSocketPolicyFile",
        ),
        False,
    ),
    "http_headers": NOTHING,
    "http_request_params": NOTHING,
    "clean_headers": (),
    "websocket_protocols": (),
    "websocket_extensions": (),
    "websocket_extensions_in_use": (),
    "data": b"",
    "root_path": "",
    "state": WebSocketProtocol.STATE_OPEN,
    "send_state": WebSocketProtocol.SEND_STATE_GROUND,
    "autoPingPendingSeq": 0,
    "websocket_version": 13,  # RFC 6455
}


def lean_protocol(base: type) -> type:
    from twisted.internet import tcp
    from twisted.web.http import HTTPChannel

    class LeanWebSocketProtocol(base):
        """daphne's ``WebSocketProtocol``; the options are class attributes (see ``protocol_for``), and so
        is the state every open connection holds alike (``SHARED_AT_OPEN``)."""

        def onOpen(self) -> None:
            # The handshake is over: let go of what only it needed (module docstring).
            transport = self.transport
            if isinstance(transport, tcp.Connection) and isinstance(transport.producer, HTTPChannel):
                transport.unregisterProducer()
            self.http_request_data = self.http_response_data = self.http_status_line = None
            # The request's headers and query, parsed three times (autobahn's dict, daphne's list, the
            # request's params): read during the handshake only. daphne keeps ``request`` for its path.
            self.http_request_uri = self.http_request_path = self.http_request_host = self.websocket_origin = None
            self.http_headers = self.http_request_params = NOTHING
            self.request.headers = self.request.params = NOTHING
            self.clean_headers = self.websocket_protocols = self.websocket_extensions = ()
            if not self.websocket_extensions_in_use:
                self.websocket_extensions_in_use = ()
            self.application_deferred = None  # daphne's, fired: the application was made
            if not self.send_queue:  # nothing waits in autobahn's queue (it never does when it opens)
                self.send_queue = SendQueue()
            self.share_state()
            super().onOpen()

        def share_state(self) -> None:
            """Drop the attributes whose value is the class's own (``SHARED_AT_OPEN``): reading one gives
            the same value, setting one makes it the connection's again. Autobahn, daphne and Twisted
            set ~70 attributes on each connection, a 128-slot attribute table (1.6 KB); what is left
            (~26, and the ~13 autobahn adds once frames arrive: pongs, messages) fits 64 slots (0.8 KB).
            The table is rebuilt, since a dict does not shrink when keys leave it."""
            attributes, shared = vars(self), self.shared_at_open
            kept = {
                name: value for name, value in attributes.items() if name not in shared or value is not shared[name]
            }
            if len(kept) < len(attributes):
                self.__dict__ = kept

    # A name the base class has already (its value is what a connection not yet open reads) is not shared.
    LeanWebSocketProtocol.shared_at_open = {n: v for n, v in SHARED_AT_OPEN.items() if not hasattr(base, n)}
    for name, value in LeanWebSocketProtocol.shared_at_open.items():
        setattr(LeanWebSocketProtocol, name, value)
    return LeanWebSocketProtocol


def protocol_for(factory: Any, lean: type) -> type:
    """A subclass of ``lean`` with the factory's current options as class attributes: autobahn then
    finds them on the class instead of copying them into every connection (nor listing them). (A function option, such
    as ``perMessageCompressionAccept``, is kept as a static method: called unbound, as when copied.)
    Built once the options are final: options set on the factory afterwards do not reach it."""
    options = {name: getattr(factory, name) for name in lean.CONFIG_ATTRS}
    attributes = {
        name: staticmethod(value) if isinstance(value, FunctionType) else value for name, value in options.items()
    }
    # With every option on the class, autobahn's list of options to copy into each connection is empty:
    # a connection made then copies nothing, and the debug line listing what it copied no longer
    # pretty-prints ~30 options per connection whatever the log level (~15 % of a handshake's CPU,
    # docs/daphne-upstream.md §7).
    return type(lean.__name__, (lean,), {**attributes, "CONFIG_ATTRS": (), "__module__": __name__})
