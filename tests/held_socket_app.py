"""An ASGI application for tests/test_held_socket.py, served by the gateway's daphne on a listening
socket it is handed (``--fd``): ``/pid`` answers with the serving process's id; ``/hold`` connects to
the test at ``HOLD_PORT``, says its process id and answers only once the test closes that connection
(an HTTP request the process must answer before it stops: it keeps a SIGTERMed server draining)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import django

django.setup()  # the gateway's server reads its settings (MAX_PENDING_HANDSHAKES, HTTP_DRAIN_TIMEOUT) from Django's


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/hold":
        reader, writer = await asyncio.open_connection("127.0.0.1", int(os.environ["HOLD_PORT"]))
        writer.write(f"{os.getpid()}\n".encode())
        await writer.drain()
        await reader.read()  # until the test closes it
        writer.close()
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
