"""The smallest ASGI application a WebSocket server can serve: accept every handshake, then wait.

The handshakes scenario serves it under the gateway's daphne, plain daphne and uvicorn, to tell
what a server spends on a handshake by itself from what the gateway adds (upgrade, session, access,
join, history). HTTP gets a 404; lifespan is acknowledged (uvicorn asks).
"""

from __future__ import annotations

from typing import Any


async def application(scope: dict, receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif kind == "http":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    elif kind == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
