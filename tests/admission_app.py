"""An ASGI application for tests/test_admission.py, served by the gateway's daphne: a WebSocket to
``/hold`` is accepted only once the file ``release`` exists in ``$ADMISSION_DIR`` (the file ``holding``
says it is waiting); any other WebSocket at once; HTTP is answered 200."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import django

django.setup()  # the gateway's server reads its settings (MAX_PENDING_HANDSHAKES, LISTEN_BACKLOG) from Django's

DIRECTORY = Path(os.environ["ADMISSION_DIR"])


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    if scope["path"] == "/hold":
        (DIRECTORY / "holding").touch()
        while not (DIRECTORY / "release").exists():
            await asyncio.sleep(0.02)  # polling for the test's word, with the test's deadline
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
