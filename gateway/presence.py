"""Who is in a room now: browsers connected (from any process) and devices heard from recently."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Count, Max
from django.utils import timezone

from .models import Message, Presence
from .rooms import SENDER_MAX_LENGTH, group_name, to_json

logger = logging.getLogger(__name__)

DEVICE_RECENT = timedelta(minutes=10)
ANNOUNCE_DELAY = 0.1  # seconds

_announcing: dict[str, asyncio.Task] = {}  # room -> its announcement to come


def _snapshot(room: str) -> dict:
    browsers = Presence.objects.filter(room=room).values("name").annotate(count=Count("id")).order_by("name")
    devices = (
        Message.objects.filter(
            room__name=room, source=Message.Source.MQTT, created_at__gte=timezone.now() - DEVICE_RECENT
        )
        .values("sender")
        .annotate(last_seen=Max("created_at"))
        .order_by("sender")
    )
    return {
        "type": "presence",
        "room": room,
        "browsers": [{"name": b["name"], "count": b["count"]} for b in browsers],
        "devices": [
            {"name": d["sender"], "last_seen": d["last_seen"].isoformat(timespec="milliseconds").replace("+00:00", "Z")}
            for d in devices
        ],
    }


def _join(room: str, key: str, name: str) -> None:
    # update_or_create() in one statement (INSERT ... ON CONFLICT DO UPDATE), not a transaction of five:
    # each join waits for this in the process's one database thread.
    Presence.objects.bulk_create(
        [Presence(channel_name=key, room=room, name=name)],
        update_conflicts=True,
        unique_fields=["channel_name"],
        update_fields=["room", "name"],
    )


def _leave(room: str, key: str) -> None:
    Presence.objects.filter(channel_name=key).delete()


async def _announce(room: str) -> None:
    """Tell the room who is here, once for all the joins and leaves of the last moment: a room of N
    readers filling up must not cost N snapshots sent to N readers each."""
    await asyncio.sleep(ANNOUNCE_DELAY)  # a debounce: gather this moment's changes into one snapshot
    del _announcing[room]  # changes from now on are told by the next announcement
    try:
        snapshot = await database_sync_to_async(_snapshot)(room)
        group = group_name(room)
        message = {"type": "room.presence", "group": group, "text": to_json(snapshot)}
        await get_channel_layer().group_send(group, message)
    except Exception:
        logger.exception("Presence update failed in room %s", room)


async def _update(change, room: str, *args) -> None:
    # Presence is a courtesy: failing to count someone must never cost them the room.
    try:
        await database_sync_to_async(change)(room, *args)
    except Exception:
        logger.exception("Presence update failed in room %s", room)
        return
    task = _announcing.get(room)
    if task is None or task.done():  # done: left over from another event loop
        _announcing[room] = asyncio.get_running_loop().create_task(_announce(room), context=contextvars.Context())


async def join(room: str, key: str, name: str) -> None:
    """Count this connection (``key``: unique to it) in the room, and tell everyone there."""
    await _update(_join, room, key, (name or "").strip()[:SENDER_MAX_LENGTH] or "anonymous")


async def leave(room: str, key: str) -> None:
    await _update(_leave, room, key)
