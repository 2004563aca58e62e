"""Component health for ``/healthz``: the database, the channel layer, and adapters in this process."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

if TYPE_CHECKING:
    from .runtime import Runtime


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer(layer: Any) -> None:
    # A round trip through a group, the way room messages travel (and, with several Redis hosts,
    # the path channels-redis routes right: a plain send to a process's channel may miss it).
    channel = await layer.new_channel("health.")
    group = channel.replace("!", ".").replace("health.", "health-", 1)
    await layer.group_add(group, channel)
    try:
        await layer.group_send(group, {"type": "health.ping"})
        await layer.receive(channel)
    finally:
        await layer.group_discard(group, channel)


CHECK_SECONDS = 3.0  # a component that has not answered by then is reported down


async def _state(check) -> dict:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await check()
    except Exception as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "detail": "ok"}


def _event_loop(runtime: Runtime) -> dict:
    """Degraded while the loop has lately run a timer more than ``LOOP_LAG_LIMIT`` seconds late: then
    something held up every connection of this process."""
    lag = runtime.loop_lag.recent
    ok = lag <= settings.LOOP_LAG_LIMIT
    return {"ok": ok, "detail": f"lag {lag * 1000:.0f} ms" + ("" if ok else f" (over {settings.LOOP_LAG_LIMIT}s)")}


async def check(runtime: Runtime) -> dict[str, dict]:
    """The process's components, and the adapters running in it (their probes, ``runtime.probes``)."""
    components = {
        "database": await _state(database_sync_to_async(_database)),
        "channel_layer": await _state(lambda: _channel_layer(runtime.layer)),
        "event_loop": _event_loop(runtime),
    }
    for name, probe in runtime.probes.items():
        ok, detail = probe()
        components[name] = {"ok": ok, "detail": detail}
    return components
