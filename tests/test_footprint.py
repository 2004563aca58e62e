"""gateway/footprint.py: daphne's input queue, autobahn's options on the class, the upgraded HTTP channel."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest
from autobahn.websocket.protocol import WebSocketServerProtocol
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

from gateway.footprint import InputQueue, SendQueue, fits_this_daphne, lean_protocol, protocol_for
from gateway.heap import GC_THRESHOLD_ASGI
from tests.support import ROOT


async def test_input_queue_is_fifo_and_waits():
    queue = InputQueue()
    assert queue  # daphne tests `if self.application_queue:`
    assert queue.empty() and queue.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await getter == 1
    assert queue.qsize() == 1 and await queue.get() == 2
    assert queue.empty() and queue._items is None and queue._getters is None  # nothing held while idle


async def test_input_queue_serves_getters_in_turn_and_passes_on_a_wake_up_it_cannot_take():
    queue = InputQueue()
    first, second, third = (asyncio.ensure_future(queue.get()) for _ in range(3))
    await asyncio.sleep(0)
    first.cancel()  # cancelled while waiting: takes nothing
    await asyncio.sleep(0)
    queue.put_nowait("a")
    second.cancel()  # woken for "a", cancelled before it ran: "a" goes to the next getter
    await asyncio.sleep(0)
    assert first.cancelled() and second.cancelled()
    assert await third == "a"
    assert queue.empty() and queue._getters is None


async def test_input_queue_matches_asyncio_queue():
    for queue in (InputQueue(), asyncio.Queue()):
        got = []

        async def reader(name, queue=queue, got=got):
            got.append((name, await queue.get()))

        readers = [asyncio.ensure_future(reader(n)) for n in range(3)]
        await asyncio.sleep(0)
        for item in "xyz":
            queue.put_nowait(item)
        await asyncio.gather(*readers)
        assert got == [(0, "x"), (1, "y"), (2, "z")]


def test_send_queue_is_the_deque_autobahn_uses_and_holds_nothing_while_empty():
    queue = SendQueue()
    assert not queue and len(queue) == 0
    queue.append((b"a", True))
    queue.append((b"b", False))
    assert queue and len(queue) == 2
    assert queue.popleft() == (b"a", True) and queue.popleft() == (b"b", False)
    assert not queue and queue._items is None
    with pytest.raises(IndexError):
        queue.popleft()


def test_options_live_on_the_class_not_in_each_connection():
    factory = WebSocketFactory(None, server="daphne")
    factory.setProtocolOptions(autoPingTimeout=30, openHandshakeTimeout=5, maxFramePayloadSize=65536)
    lean = lean_protocol(WebSocketProtocol)
    cls = protocol_for(factory, lean)
    assert issubclass(cls, WebSocketProtocol)
    for name in WebSocketServerProtocol.CONFIG_ATTRS:
        assert getattr(cls(), name) == getattr(factory, name), name
    accept = cls().perMessageCompressionAccept  # a function option is not bound to the connection
    assert accept([]) is None
    assert cls.CONFIG_ATTRS == ()  # nothing left for a new connection to copy, nor to list in a debug line


SCRIPT = """
import asyncio, json, sys, threading
import daphne.server  # the asyncio reactor
from gateway.server import GatewayServer
from twisted.internet import reactor
from autobahn.websocket.protocol import WebSocketServerProtocol
from fanout.outgoing import text_frame
import gc
from gateway import daphne_io, footprint
events = []
gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage, to be named

async def app(scope, receive, send):
    frames = scope.get("extensions", {}).get(daphne_io.FRAMES_EXTENSION)
    while True:
        event = await receive()
        events.append(event["type"])
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": event["text"] * 2})
            if frames:  # the extension, beside the ASGI send
                frames["write"](text_frame(event["text"] * 3))
            else:
                await send({"type": "websocket.send", "text": "no frames extension"})
        elif event["type"] == "websocket.disconnect":
            return

write_through = sys.argv[1] == "write-through"
server = GatewayServer(
    app, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False, verbosity=0, write_through=write_through
)
report = {}

def client():
    from websockets.sync.client import connect
    while not server.listening_addresses:
        pass
    host, port = server.listening_addresses[0]
    with connect(f"ws://{host}:{port}/ws/") as ws:
        ws.send("hi")
        report["echo"] = [ws.recv(timeout=5), ws.recv(timeout=5)]
        reactor.callFromThread(inspect)
        report["inspected"] = done.wait(5)
        report["sync send"] = ws.recv(timeout=5)  # through autobahn's send queue, now a SendQueue
    reactor.callLater(0.5, reactor.stop)

def inspect():
    (protocol,) = [p for p in server.connections if isinstance(p, WebSocketServerProtocol)]
    report["queue"] = type(protocol.application_queue).__name__
    report["copied options"] = sorted(set(WebSocketServerProtocol.CONFIG_ATTRS) & set(vars(protocol)))
    report["state held alike"] = sorted(set(footprint.SHARED_AT_OPEN) & set(vars(protocol)))
    report["attributes fit 64 slots"] = len(vars(protocol)) <= 42  # a dict of 64 slots holds 42
    report["producer"] = repr(protocol.transport.producer)
    report["handshake text"] = [protocol.http_request_data, protocol.http_response_data]
    headers = [protocol.http_headers, protocol.request.headers, protocol.clean_headers]
    report["handshake headers"] = [len(h) for h in headers]
    report["request path"] = protocol.request.path  # daphne logs it when the connection closes
    report["send queue"] = [type(protocol.send_queue).__name__, len(protocol.send_queue)]
    report["heap settled"] = [gc.get_freeze_count() > 0, list(gc.get_threshold())]  # gateway/heap.py
    report["quiet collector"] = server.quiet_collector.handle is not None
    protocol.sendMessage("sync".encode(), sync=True)
    done.set()

done = threading.Event()
threading.Thread(target=client, daemon=True).start()
server.run()
report["events"] = events
server.connections.clear()  # daphne lets go of its connections (and of the upgraded HTTP request)
gc.collect()
report["cyclic garbage"] = sorted({
    type(found).__name__ for found in gc.garbage if type(found).__name__ in ("WebRequest", "HeaderDeadlineChannel")
})
from twisted.internet import tcp
report["tcp write"] = tcp.Connection.write.__module__
print(json.dumps(report))
"""


@pytest.mark.parametrize("write_through", [False, True])
def test_under_the_gateway_server(write_through):
    """The gateway's daphne (gateway/server.py, with gateway/footprint.py and gateway/daphne_io.py): the
    WebSocket works, written to through ``websocket.send`` and the frames extension, and keeps none of
    what it no longer needs, nor leaves it in cycles for the garbage collector; Twisted's TCP write is
    patched only when asked (TWISTED_WRITE_THROUGH)."""
    argv = [sys.executable, "-c", textwrap.dedent(SCRIPT), "write-through" if write_through else "queued"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "echo": ["hihi", "hihihi"],
        "inspected": True,
        "queue": "InputQueue",
        "copied options": [],
        "state held alike": ["current_frame", "data", "inside_message"],  # set again by the frames received
        "attributes fit 64 slots": True,
        "producer": "<Backlog held=0 limit=1048576 paused=False>",  # gateway/backlog.py, not daphne's channel
        "handshake text": [None, None],
        "heap settled": [True, list(GC_THRESHOLD_ASGI)],
        "quiet collector": True,
        "handshake headers": [0, 0, 0],
        "request path": "/ws/",
        "send queue": ["SendQueue", 0],
        "sync send": "sync",
        "events": ["websocket.connect", "websocket.receive", "websocket.disconnect"],
        "cyclic garbage": [],  # the upgraded HTTP request and its channel: freed as daphne let go
        "tcp write": "gateway.write_through" if write_through else "twisted.internet._newtls",  # Twisted's own
    }


def test_the_installed_daphne_is_the_one_create_application_copies():
    """Fails on an upgrade of daphne: GatewayServer.create_application is daphne 4.2's with a lean queue
    (on another daphne it uses daphne's own); compare it with the new one, then widen DAPHNE_SERIES."""
    assert fits_this_daphne()
