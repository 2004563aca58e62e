"""Who is in a room now: browsers connected (from any process) and devices heard from recently."""

from __future__ import annotations

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


def _join(room: str, channel_name: str, name: str) -> dict:
    Presence.objects.update_or_create(channel_name=channel_name, defaults={"room": room, "name": name})
    return _snapshot(room)


def _leave(room: str, channel_name: str) -> dict:
    Presence.objects.filter(channel_name=channel_name).delete()
    return _snapshot(room)


async def _announce(snapshot: dict) -> None:
    await get_channel_layer().group_send(
        group_name(snapshot["room"]), {"type": "room.presence", "text": to_json(snapshot)}
    )


async def _update(change, *args) -> None:
    # Presence is a courtesy: failing to count someone must never cost them the room.
    try:
        await _announce(await database_sync_to_async(change)(*args))
    except Exception:
        logger.exception("Presence update failed in room %s", args[0])


async def join(room: str, channel_name: str, name: str) -> None:
    """Count this connection in the room and tell everyone there."""
    await _update(_join, room, channel_name, (name or "").strip()[:SENDER_MAX_LENGTH] or "anonymous")


async def leave(room: str, channel_name: str) -> None:
    await _update(_leave, room, channel_name)
