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

from fanout.hub import ROOMS_PRESENCE

from .batches import Batches
from .models import Message, Presence
from .rooms import blames_one_post, to_json
from .topics import PRESENCE_GROUP, room_group
from .validation import clean_name

logger = logging.getLogger(__name__)

DEVICE_RECENT = timedelta(minutes=10)
GATHER = 0.1  # seconds the changes of a moment are gathered for, then written and announced together
FRAMES_PER_SECOND = 20_000  # a room is announced at most readers / this often (a frame to each reader)
MESSAGE_BYTES = 64 * 1024  # a presence message holds rooms' snapshots up to about this many characters
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
    key: str | None  # the connection's; None: nobody's (the room is only to be announced)
    name: str | None  # None: it left


def _write(changes: list[_Change]) -> list[None]:
    """Every join and leave of a moment in one transaction: an upsert (``update_or_create``'s rows, a
    key's ``joined_at`` kept) and a delete. In SQL of its own rather than ``bulk_create``: the ORM's
    model instances and per-field preparation cost more than the rest of a join (a handshake pays for
    its row). Presence is a courtesy, so on PostgreSQL the commit does not wait for the disk
    (``synchronous_commit`` off): a crash may forget the last moment's changes, and the rows of a
    crashed process linger anyway."""
    last = {change.key: change for change in changes if change.key is not None}  # a key's last change counts
    joins = [change for change in last.values() if change.name is not None]
    leaves = [change.key for change in last.values() if change.name is None]
    if not joins and not leaves:
        return [None] * len(changes)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        if joins:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            columns = ([c.key for c in joins], [c.room for c in joins], [c.name for c in joins], [now] * len(joins))
            cursor.execute(*_upsert(len(joins), columns))
        if leaves:
            cursor.execute(*_delete(leaves))
    return [None] * len(changes)


_TABLE = Presence._meta.db_table
_CONFLICT = " ON CONFLICT (channel_name) DO UPDATE SET room = EXCLUDED.room, name = EXCLUDED.name"


def _upsert(rows: int, columns: tuple[list, list, list, list]) -> tuple[str, list]:
    """The upsert of ``rows`` joins. On PostgreSQL the columns go as four arrays, so the statement is
    the same text whatever the rows (psycopg parses a statement it has not seen in Python, placeholder
    by placeholder); elsewhere, a row of placeholders each."""
    table = connection.ops.quote_name(_TABLE)
    if connection.vendor == "postgresql":
        sql = (
            f"INSERT INTO {table} (channel_name, room, name, joined_at)"  # noqa: S608 (no value in the text)
            " SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[])" + _CONFLICT
        )
        return sql, list(columns)
    values = ", ".join(["(%s, %s, %s, %s)"] * rows)
    sql = f"INSERT INTO {table} (channel_name, room, name, joined_at) VALUES {values}" + _CONFLICT  # noqa: S608
    return sql, [value for row in zip(*columns, strict=True) for value in row]


def _delete(keys: list[str]) -> tuple[str, list]:
    table = connection.ops.quote_name(_TABLE)
    if connection.vendor == "postgresql":
        return f"DELETE FROM {table} WHERE channel_name = ANY(%s::varchar[])", [keys]  # noqa: S608
    return f"DELETE FROM {table} WHERE channel_name IN ({', '.join(['%s'] * len(keys))})", keys  # noqa: S608


def _write_and_read(changes: list[_Change]) -> list[dict]:
    """A moment's changes written, then the snapshot of each room they touched, in one trip to the
    database thread: for each change, its room's snapshot (one object per room)."""
    _write(changes)
    rooms = list(dict.fromkeys(change.room for change in changes))
    snapshots = dict(zip(rooms, _snapshots(rooms), strict=True))
    return [snapshots[change.room] for change in changes]


class PresenceTracker:
    """A process's joins and leaves (``gateway.runtime.Runtime.presence``): written in batches, and told
    to each room's readers through ``layer``.

    ``join`` and ``leave`` hand the change in and return: a handshake does not wait for its presence
    row. The changes of ``GATHER`` seconds are written in one transaction, in the order they were handed
    in (a connection's leave is never written before its join), and the snapshots of the rooms they
    touched are read in the same trip to the database thread; then those rooms are announced together,
    in one layer message. A burst of joins, as after a restart, costs a few trips and sends, and each
    room is told once a moment, not once per join: a room of N readers filling up must not cost N
    snapshots sent to N readers each.

    Each announcement is a frame to every reader of the room, so a crowded room is told less often: at
    most once every ``readers / FRAMES_PER_SECOND`` seconds (0.5 s for 10,000 readers). Changes in
    between are told once that time has come, from a snapshot read then: the last word is always the
    room as it is."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.closed = False
        self.quiet_until: dict[str, float] = {}  # room -> when it may be announced again (the loop's time)
        self.owed: set[str] = set()  # rooms changed while quiet: announced when their time comes
        self.paying: asyncio.Task | None = None
        # A change that fails alone costs only itself (names are cleaned first, so none should).
        self.changes: Batches[_Change, dict] = Batches(
            database_sync_to_async(_write_and_read), isolate=blames_one_post, gather=GATHER, then=self._announce
        )

    def join(self, room: str, key: str, name: str) -> asyncio.Future[dict]:
        """Count this connection (``key``: unique to it) in the room, and tell everyone there. ``name`` is
        never refused: a control character or lone surrogate in it is shown as U+FFFD. What it returns
        is done once the change is written (with the room's snapshot); nobody needs to wait for it."""
        return self._update(_Change(room, key, clean_name(name)))

    def leave(self, room: str, key: str) -> asyncio.Future[dict]:
        return self._update(_Change(room, key, None))

    def _update(self, change: _Change) -> asyncio.Future[dict]:
        written = self.changes.submit(change)
        written.add_done_callback(functools.partial(self._failed, change.room))
        return written

    @staticmethod
    def _failed(room: str, written: asyncio.Future[dict]) -> None:
        # Presence is a courtesy: failing to count someone must never cost them the room.
        if not written.cancelled() and written.exception() is not None:
            logger.error("Presence update failed in room %s", room, exc_info=written.exception())

    async def _announce(self, snapshots: list[dict]) -> None:
        """Every room of a written batch told who is here (its newest snapshot), unless it is quiet (then
        later), in a layer message to every process's hub (``PRESENCE_GROUP``): one send a moment,
        however many rooms it touched, or one per ``MESSAGE_BYTES`` of snapshots (a moment of many
        crowded rooms is not one huge message)."""
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        if len(self.quiet_until) > 1000:  # forget the rooms whose quiet time is over
            self.quiet_until = {room: until for room, until in self.quiet_until.items() if until > now}
        due = []
        for room, snapshot in {snapshot["room"]: snapshot for snapshot in snapshots}.items():
            if self.quiet_until.get(room, 0.0) <= now:
                due.append(snapshot)
            else:
                self.owed.add(room)
        if self.owed and (self.paying is None or self.paying.done()):
            self.paying = asyncio.get_running_loop().create_task(self._pay_owed(), context=contextvars.Context())
        await self._tell(due)

    async def _pay_owed(self) -> None:
        """The rooms changed while they were quiet, each announced when its time comes: handed in as a
        change of nobody, so its snapshot is read and told in order with every other announcement."""
        loop = asyncio.get_running_loop()
        while self.owed and not self.closed:
            await asyncio.sleep(max(0.0, min(self.quiet_until.get(room, 0.0) for room in self.owed) - loop.time()))
            for room in [room for room in self.owed if self.quiet_until.get(room, 0.0) <= loop.time()]:
                self.owed.discard(room)
                self._update(_Change(room, None, None))

    async def _tell(self, snapshots: list[dict]) -> None:
        """Announce these rooms now, and note when each may be announced again."""
        now = asyncio.get_running_loop().time()
        rooms: list[list[str]] = []
        size = 0
        for snapshot in snapshots:
            room = snapshot["room"]
            self.owed.discard(room)  # told now: nothing is owed it
            quiet = sum(browser["count"] for browser in snapshot["browsers"]) / FRAMES_PER_SECOND
            if quiet > GATHER:  # (a room told no more often than a batch is written needs no note)
                self.quiet_until[room] = now + quiet
            else:
                self.quiet_until.pop(room, None)
            text = to_json(snapshot)
            rooms.append([room_group(room), text])
            size += len(text)
            if size >= MESSAGE_BYTES:
                await self._send(rooms)
                rooms, size = [], 0
        if rooms:
            await self._send(rooms)

    async def _send(self, rooms: list[list[str]]) -> None:
        try:
            await self.layer.group_send(PRESENCE_GROUP, {"type": ROOMS_PRESENCE, "rooms": rooms})
        except Exception:
            logger.exception("Presence update failed in rooms %s", ", ".join(group for group, _ in rooms))

    async def close(self) -> None:
        """Announce nothing more (the process is stopping), and finish writing the changes handed in
        (the leaves of the connections closed last), for at most ``CLOSE_SECONDS``."""
        self.closed = True
        if self.paying is not None:
            self.paying.cancel()
        if self.changes.task is not None and not self.changes.task.done():
            await asyncio.wait([self.changes.task], timeout=CLOSE_SECONDS)
