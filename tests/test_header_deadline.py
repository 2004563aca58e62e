"""HTTP_HEADER_TIMEOUT (gateway/server.py): a request's headers must be complete within a total deadline,
however slowly they trickle, under both of the gateway's servers (``rungateway`` and ``python -m
gateway.serve``); a normal request, a WebSocket and an event stream held longer than it are unaffected."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from tests.support import PYTHON, Process, ahttp, prepare_gateway, receive, start_gateway, unique, wait_for_port
from tests.test_events import SseClient

DEADLINE = 2.0  # HTTP_HEADER_TIMEOUT; the idle timeout (HTTP_IDLE_TIMEOUT) is longer than the whole test


@pytest.fixture(scope="module", params=["rungateway", "gateway.serve"])
def server(request, tmp_path_factory, mosquitto):
    directory = tmp_path_factory.mktemp("header-deadline")
    gateway = prepare_gateway(directory, mosquitto, HTTP_HEADER_TIMEOUT=DEADLINE, HTTP_IDLE_TIMEOUT=60)
    if request.param == "rungateway":
        start_gateway(gateway)
    else:
        argv = [
            PYTHON,
            "-m",
            "gateway.serve",
            "-b",
            "127.0.0.1",
            "-p",
            str(gateway.http_port),
            "config.asgi:application",
        ]
        gateway.process = Process(argv, env=gateway.env).start()
        wait_for_port(gateway.http_port, alive=lambda: gateway.process.popen.poll() is None, timeout=30)
    yield gateway
    assert gateway.process.stop() == 0, gateway.process.output


async def test_a_trickled_header_is_cut_off_at_the_deadline(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.5)  # the slow client's pace: what is under test

    trickling = asyncio.create_task(trickle())
    async with asyncio.timeout(DEADLINE + 5):
        said = await reader.read()
    took = time.monotonic() - started
    trickling.cancel()
    writer.close()
    assert said.startswith(b"HTTP/1.1 408 "), said
    assert DEADLINE - 0.5 < took < DEADLINE + 2


async def test_requests_websockets_and_event_streams_outlive_the_deadline(server):
    base = f"127.0.0.1:{server.http_port}"
    room = unique("deadline")
    # A keep-alive connection: a request, a pause past the deadline, a second request.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    writer.write(request)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    ws = await websockets.connect(f"ws://{base}/ws/chat/{room}/", origin=f"http://{base}", open_timeout=10)
    await receive(ws, "history")
    stream = await asyncio.to_thread(SseClient, server.http_port, f"/api/rooms/{room}/events")
    await asyncio.sleep(DEADLINE + 1)  # held open past the header deadline: what is under test
    posted = await ahttp("POST", f"http://{base}/api/rooms/{room}/messages", {"message": "still here"})
    assert posted[0] == 201, posted
    assert (await receive(ws))["message"] == "still here"
    while (event := await asyncio.to_thread(stream.events.get, True, 10))["event"] != "message":
        pass  # presence comes and goes
    assert json.loads(event["data"])["message"] == "still here"
    await asyncio.wait_for(reader.read(4096), 5)  # the rest of the first response, if any
    writer.write(request)
    assert b"HTTP/1.1 200" in await asyncio.wait_for(reader.read(4096), 10)
    stream.close()
    await ws.close()
    writer.close()
