"""Who is in a room now: browsers connected (from any process) and devices heard from recently."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from datetime import timedelta
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from fanout.hub import ROOM_PRESENCE

from .batches import Batches
from .models import Message, Presence
from .rooms import blames_one_post, to_json
from .topics import room_group
from .validation import clean_name

logger = logging.getLogger(__name__)

DEVICE_RECENT = timedelta(minutes=10)
ANNOUNCE_DELAY = 0.1  # seconds
WRITE_GATHER = 0.02  # seconds a presence write waits for more changes (PresenceTracker)
READ_GATHER = 0.05  # seconds a snapshot read waits for more rooms announcing
ANNOUNCE_SENDS = 8  # announcements sent to the layer at once, at most (a burst must not drain its pool)
CLOSE_SECONDS = 5.0  # at most this long, at a stop, to write the last changes


def _snapshots(rooms: list[str]) -> list[dict]:
    """Who is in each of ``rooms`` now, in two queries for all of them (rooms announcing at the same
    moment, as after a restart, share them)."""
    wanted = set(rooms)
    browsers: dict[str, list[dict]] = {room: [] for room in wanted}
    devices: dict[str, list[dict]] = {room: [] for room in wanted}
    counted = (
        Presence.objects.filter(room__in=wanted)
        .values("room", "name")
        .annotate(count=Count("id"))
        .order_by("room", "name")
    )
    for row in counted:
        browsers[row["room"]].append({"name": row["name"], "count": row["count"]})
    heard = (
        Message.objects.filter(
            room__name__in=wanted, source=Message.Source.MQTT, created_at__gte=timezone.now() - DEVICE_RECENT
        )
        .values("room__name", "sender")
        .annotate(last_seen=Max("created_at"))
        .order_by("room__name", "sender")
    )
    for row in heard:
        last_seen = row["last_seen"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
        devices[row["room__name"]].append({"name": row["sender"], "last_seen": last_seen})
    return [{"type": "presence", "room": room, "browsers": browsers[room], "devices": devices[room]} for room in rooms]


class _Change(NamedTuple):
    room: str
    key: str  # the connection's
    name: str | None  # None: it left


def _write(changes: list[_Change]) -> list[None]:
    """Every join and leave of a moment in one transaction: an upsert (update_or_create's rows, a
    key's ``joined_at`` kept) and a delete. Presence is a courtesy, so on PostgreSQL the commit does
    not wait for the disk (``synchronous_commit`` off): a crash may forget the last moment's changes,
    and the rows of a crashed process linger anyway."""
    last = {change.key: change for change in changes}  # a key's last change is the one that counts
    joins = [Presence(channel_name=c.key, room=c.room, name=c.name) for c in last.values() if c.name is not None]
    leaves = [c.key for c in last.values() if c.name is None]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        if joins:
            Presence.objects.bulk_create(
                joins, update_conflicts=True, unique_fields=["channel_name"], update_fields=["room", "name"]
            )
        if leaves:
            Presence.objects.filter(channel_name__in=leaves).delete()
    return [None] * len(changes)


class PresenceTracker:
    """A process's joins and leaves (``gateway.runtime.Runtime.presence``): written in batches, and told
    to each room's readers through ``layer``.

    ``join`` and ``leave`` hand the change in and return: a handshake does not wait for its presence
    row. The changes of ``WRITE_GATHER`` seconds go in one write (a burst of joins, as after a restart,
    costs a few transactions, not one each), in the order they were handed in, so a connection's leave
    is never written before its join. A room is announced once its changes are written."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        # A change that fails alone costs only itself (names are cleaned first, so none should).
        self.changes: Batches[_Change, None] = Batches(
            database_sync_to_async(_write), isolate=blames_one_post, gather=WRITE_GATHER
        )
        self.announcing: dict[str, asyncio.Task] = {}  # room -> its announcement to come
        self.closed = False
        # 2,000 readers closing at once announce in 200 rooms at once: Redis' pool holds 100 connections.
        self.sending = asyncio.Semaphore(ANNOUNCE_SENDS)
        # The snapshots of the rooms announcing in the same moment, read together.
        self.reads: Batches[str, dict] = Batches(database_sync_to_async(_snapshots), gather=READ_GATHER)

    def join(self, room: str, key: str, name: str) -> asyncio.Future[None]:
        """Count this connection (``key``: unique to it) in the room, and tell everyone there. ``name`` is
        never refused: a control character or lone surrogate in it is shown as U+FFFD. What it returns
        is done once the change is written; nobody needs to wait for it."""
        return self._update(_Change(room, key, clean_name(name)))

    def leave(self, room: str, key: str) -> asyncio.Future[None]:
        return self._update(_Change(room, key, None))

    def _update(self, change: _Change) -> asyncio.Future[None]:
        written = self.changes.submit(change)
        written.add_done_callback(functools.partial(self._written, change.room))
        return written

    def _written(self, room: str, written: asyncio.Future[None]) -> None:
        # Presence is a courtesy: failing to count someone must never cost them the room.
        if written.cancelled():
            return
        failure = written.exception()
        if failure is not None:
            logger.error("Presence update failed in room %s", room, exc_info=failure)
            return
        if room not in self.announcing and not self.closed:
            loop = asyncio.get_running_loop()
            self.announcing[room] = loop.create_task(self._announce(room), context=contextvars.Context())

    async def _announce(self, room: str) -> None:
        """Tell the room who is here, once for all the joins and leaves of the last moment: a room of N
        readers filling up must not cost N snapshots sent to N readers each."""
        await asyncio.sleep(ANNOUNCE_DELAY)  # a debounce: gather this moment's changes into one snapshot
        del self.announcing[room]  # changes from now on are told by the next announcement
        try:
            snapshot = await self.reads.submit(room)
            group = room_group(room)
            message = {"type": ROOM_PRESENCE, "group": group, "text": to_json(snapshot)}
            async with self.sending:
                await self.layer.group_send(group, message)
        except Exception:
            logger.exception("Presence update failed in room %s", room)

    async def close(self) -> None:
        """Announce nothing more (the process is stopping), and finish writing the changes handed in
        (the leaves of the connections closed last), for at most ``CLOSE_SECONDS``."""
        self.closed = True
        for task in self.announcing.values():
            task.cancel()
        self.announcing.clear()
        if self.changes.task is not None and not self.changes.task.done():
            await asyncio.wait([self.changes.task], timeout=CLOSE_SECONDS)
