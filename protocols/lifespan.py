"""A minimal ASGI lifespan answer, so servers that speak lifespan (uvicorn, hypercorn) can host the app."""

from typing import Any


async def lifespan(scope: dict, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
