"""The room service: every way in posts through here to be validated, stored and fanned out."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable
from datetime import timedelta
from functools import partial
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import F
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fanout.hub import ROOM_MESSAGES

from . import limits, metrics, publishing, validation
from .access import visible_rooms
from .batches import Batches
from .limits import Limits
from .models import ROOM_NAME_REGEX, Message, Room, message_event
from .pacing import LivePacer
from .room_events import RoomEvents, StoredBatch
from .topics import out_topic, room_group
from .validation import InvalidMessage

logger = logging.getLogger(__name__)

ROOM_NAME = re.compile(f"{ROOM_NAME_REGEX}\\Z")
CATCH_UP_LIMIT = 1000  # messages replayed to a reader who reconnects with the last id it saw
SOURCES = frozenset(Message.Source.values)  # the enum's .values builds a new list on every use


class NoSuchRoom(InvalidMessage):
    """The room does not exist, and rooms are not created on first use (ROOMS_AUTO_CREATE off)."""


class RateLimited(InvalidMessage):
    """Too much, too fast: the same input may be accepted later."""


class RoomNameConverter:
    """``<room:name>`` in URL, topic and address patterns."""

    regex = ROOM_NAME_REGEX

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def validate(room: str, text: Any, sender: Any, source: str) -> tuple[str, str]:
    """The room name, and the text and sender as stored (see ``gateway.validation``), or InvalidMessage."""
    if not isinstance(room, str) or not ROOM_NAME.match(room):
        raise InvalidMessage("room names are 1 to 64 letters, digits, '-' or '_'")
    text = validation.clean_text(text)
    if len(text) > settings.MESSAGE_MAX_LENGTH:
        raise InvalidMessage(f"message is longer than {settings.MESSAGE_MAX_LENGTH} characters")
    sender = validation.clean_sender(sender)
    if source not in SOURCES:
        raise InvalidMessage(f"unknown source {source!r}")
    return text, sender


# The services a post needs are down (the database, Redis), not the post: whoever sent it should send it
# again later (HTTP 503, a WebSocket error frame, MQTT retry, SMTP 451), and nothing about it is wrong.
UNAVAILABLE = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
# A post that fails alone with one of these was refused by the database for what it holds.
CONTENT_FAILURES = (DataError, IntegrityError, ValueError, TypeError)
# A batch that fails with one of these failed for every post in it: the database, its connection or
# its schema failed (retried by the posters, not post by post in a storm), or the room is refused.
WHOLE_BATCH_FAILURES = (DatabaseError, InterfaceError, OSError, InvalidMessage)


def blames_one_post(exc: Exception) -> bool:
    """Whether a failed batch may have failed for one post's sake (and is worth writing in parts): the
    database refused data (DataError, IntegrityError), or preparing a post failed; not when the database
    itself failed (OperationalError, InterfaceError, ProgrammingError …)."""
    return isinstance(exc, (DataError, IntegrityError)) or not isinstance(exc, WHOLE_BATCH_FAILURES)


class _Post(NamedTuple):
    text: str
    sender: str
    source: str
    data: dict | None
    key: str | None
    digest: str | None
    redelivered: bool = False  # a broker's redelivery: not stored again if its digest was, lately


BATCH_MAX = 500


# A broker's redelivery (MQTT DUP) of a message whose digest was stored this recently is that message.
REDELIVERY_WINDOW = timedelta(minutes=10)


async def _stored(room: str, source: str, submitted: Awaitable[tuple[dict, bool]]) -> dict:
    try:
        event, new = await submitted
    except CONTENT_FAILURES as exc:
        if isinstance(exc, InvalidMessage):
            raise
        # It failed alone (its batch was written in parts): the database refused what it holds.
        logger.warning("A post to room %s was refused by the database: %r", room, exc)
        raise InvalidMessage("the message could not be stored: the database refused its content") from exc
    if new:
        metrics.messages_in.labels(source).inc()
    return event


def _store(room: str, posts: list[_Post]) -> list[tuple[dict, bool]]:
    """Store ``posts`` in one transaction: each one's message object, and whether it is new (not a retry)."""
    now = timezone.now()
    if connection.vendor == "postgresql" and all(post.key is None and not post.redelivered for post in posts):
        stored = _store_at_once(room, posts, now)
        if stored is not None:
            return stored
    return _store_in_transaction(room, posts, now)


def _store_in_transaction(room: str, posts: list[_Post], now) -> list[tuple[dict, bool]]:
    """Any database, keys or not: the row lock, the keys (and redelivered digests) already stored, one
    insert, the room's new last id."""
    with transaction.atomic():
        # The row lock hands out ids (and decides keys) one transaction at a time, in every process.
        room_row = Room.objects.select_for_update().filter(name=room).first()
        if room_row is None:
            if not settings.ROOMS_AUTO_CREATE:
                raise NoSuchRoom(f"no room {room} here")
            Room.objects.get_or_create(name=room)
            room_row = Room.objects.select_for_update().get(name=room)
        keys = {post.key for post in posts if post.key is not None}
        earlier = {m.key: m.as_event(room) for m in Message.objects.filter(room=room_row, key__in=keys)} if keys else {}
        digests = {post.digest for post in posts if post.redelivered and post.digest}
        recent = Message.objects.filter(room=room_row, digest__in=digests, created_at__gte=now - REDELIVERY_WINDOW)
        by_digest = {m.digest: m.as_event(room) for m in recent.order_by("seq")} if digests else {}  # the newest
        results: list[tuple[dict, bool]] = []
        rows = []
        for post in posts:
            if post.key is not None and post.key in earlier:
                results.append((earlier[post.key], False))
                continue
            if post.redelivered and post.digest in by_digest:
                results.append((by_digest[post.digest], False))
                continue
            room_row.last_id += 1
            message = Message(
                room=room_row,
                seq=room_row.last_id,
                text=post.text,
                sender=post.sender,
                source=post.source,
                data=post.data,
                key=post.key,
                digest=post.digest,
                created_at=now,
            )
            rows.append(message)
            event = message.as_event(room)
            if post.key is not None:
                earlier[post.key] = event  # the same key twice in one batch: stored once
            if post.digest is not None:
                by_digest.setdefault(post.digest, event)  # a redelivery in the same batch as its original
            results.append((event, True))
        if rows:
            Message.objects.bulk_create(rows)
            Room.objects.filter(pk=room_row.pk).update(last_id=room_row.last_id, last_activity=now)
    return results


def _insert_statement() -> str:
    quote = connection.ops.quote_name
    rooms, messages = quote(Room._meta.db_table), quote(Message._meta.db_table)
    room, seq, text, sender, source, data, created_at, digest = (
        quote(Message._meta.get_field(name).column)
        for name in ("room", "seq", "text", "sender", "source", "data", "created_at", "digest")
    )
    last_id, last_activity, name = (quote(Room._meta.get_field(f).column) for f in ("last_id", "last_activity", "name"))
    pk = quote(Room._meta.pk.column)
    # Only identifiers, each quoted by the database's own quote_name; every value is a parameter.
    return f"""
        WITH room AS (
            UPDATE {rooms} SET {last_id} = {last_id} + %(count)s, {last_activity} = %(now)s WHERE {name} = %(room)s
            RETURNING {pk} AS id, {last_id} - %(count)s AS before
        )
        INSERT INTO {messages} ({room}, {seq}, {text}, {sender}, {source}, {data}, {created_at}, {digest})
        SELECT room.id, room.before + post.n, post.text, post.sender, post.source, post.data, %(now)s, post.digest
        FROM room, json_to_recordset(%(posts)s::json)
            AS post(n bigint, text text, sender text, source text, data jsonb, digest text)
        RETURNING {seq}
    """  # noqa: S608


_INSERT: list[str] = []  # the statement, built on first use (the models' tables and columns)


def _store_at_once(room: str, posts: list[_Post], now) -> list[tuple[dict, bool]] | None:
    """PostgreSQL, posts without keys: one statement (one round trip, its own transaction) that takes
    the room's row lock, hands out the ids and inserts every post. None when there is no such room."""
    if not _INSERT:
        _INSERT.append(_insert_statement())
    # The posts as one JSON document (the C encoder makes it; PostgreSQL takes it apart), not one
    # array per column, which the driver would quote element by element in Python.
    document = json.dumps(
        [
            {"n": n, "text": p.text, "sender": p.sender, "source": p.source, "data": p.data, "digest": p.digest}
            for n, p in enumerate(posts, 1)
        ]
    )
    parameters = {"count": len(posts), "now": now, "room": room, "posts": document}
    with connection.cursor() as cursor:
        cursor.execute(_INSERT[0], parameters)
        seqs = [seq for (seq,) in cursor.fetchall()]
    if not seqs:
        return None  # the room is not there (yet): the general path creates it, or refuses
    first = min(seqs)
    return [
        (message_event(room, first + n, post.text, post.sender, post.source, now, post.data), True)
        for n, post in enumerate(posts)
    ]


def to_json(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False)


class RoomService:
    """The room service of a process (``gateway.runtime.Runtime.rooms``): each room's writer, the bus its
    stored batches are emitted on (``stored``: its subscribers are the ways out) and their live pacing."""

    def __init__(self, layer: Any, limits: Limits) -> None:
        self.layer, self.limits = layer, limits
        self.writers: dict[str, Batches[_Post, tuple[dict, bool]]] = {}
        # What is emitted once per stored batch. Live delivery, then MQTT egress: to the adapters' group,
        # unless this process's own adapter (subscribed first by gateway.adapters) took the batch.
        self.stored = RoomEvents([self.deliver_live, publishing.send_to_adapters(layer)])
        self.live = LivePacer(lambda room, events: self._fan_out(room, events))  # coalesced when held

    async def post(self, room: str, text: Any, **details: Any) -> dict:
        """Validate, store, then deliver to the room; returns the stored message object once it is
        stored (its delivery to the room's readers may still be under way). See ``submit``."""
        return await self.submit(room, text, **details)

    def submit(
        self,
        room: str,
        text: Any,
        *,
        sender: Any,
        source: str,
        data: dict | None = None,
        key: str | None = None,
        digest: str | None = None,
        redelivered: bool = False,
        over_rate: bool | None = None,
    ) -> Awaitable[dict]:
        """Validate the post and hand it to the room's writer at once (``InvalidMessage`` if it is not
        one); await what this returns for the stored message object. Posts are stored in the order they
        are handed in, so a caller that must keep an order (an MQTT topic's messages) hands them in in
        that order, whatever it awaits afterwards.

        Once stored the message is accepted: live delivery is best effort, and readers who
        missed it catch up from the history. With a ``key`` already stored in the room
        (a retry), nothing is stored or delivered again and the first message is returned; likewise a
        ``redelivered`` post whose ``digest`` was stored within ``REDELIVERY_WINDOW`` (decided in the
        same transaction that would store it, so nothing can come between).

        ``over_rate`` None: a post over the room's rate is refused (``RateLimited``: the sender is told
        to retry). True or False: the sender cannot be told (an MQTT QoS 1 device), and is over its own
        rate or not; the post is stored all the same, and its live delivery coalesced (``gateway.pacing``)
        while the sender or the room is over its rate.
        """
        text, sender = validate(room, text, sender, source)
        data, key = validation.check_data(data), validation.safe_key(key)
        if not self.limits.allow("ROOM", room):
            if over_rate is None:
                raise RateLimited(f"room {room} is busy: {limits.describe('ROOM')}, try again shortly")
            over_rate = True
        if over_rate:
            self.live.hold(room)
        post = _Post(text, sender, source, data, key, digest, redelivered)
        return _stored(room, source, self._writer(room).submit(post))

    def _writer(self, room: str) -> Batches[_Post, tuple[dict, bool]]:
        """The room's posts, stored in batches: while one batch commits, the next one gathers. One
        transaction (one row lock, one insert) serves every post that arrived meanwhile, in the order they
        arrived. Once stored, the posters have their answers (an MQTT device its PUBACK) while the batch
        goes out to the room; the next batch waits for that, so readers get them in order."""
        writers = self.writers
        writer = writers.get(room)
        if writer is None:

            async def fan_out(stored: list[tuple[dict, bool]]) -> None:
                new = [event for event, is_new in stored if is_new]
                if new:
                    await self.live.send(room, new)

            def idle() -> None:
                if writers.get(room) is writer:
                    del writers[room]

            writer = writers[room] = Batches(
                partial(database_sync_to_async(_store), room),
                most=BATCH_MAX,
                then=fan_out,
                idle=idle,
                isolate=blames_one_post,
            )
        return writer

    async def deliver_live(self, batch: StoredBatch) -> None:
        """One layer message for the room's readers: each process's hub gets it once."""
        group = room_group(batch.room)
        messages = [[event["id"], text] for event, text in zip(batch.events, batch.texts, strict=True)]
        await self.layer.group_send(
            group, {"type": ROOM_MESSAGES, "group": group, "messages": messages, "at": time.time()}
        )

    async def _fan_out(self, room: str, events: list[dict]) -> None:
        """Emit a stored batch to the ways out (gateway.room_events)."""
        texts = [to_json(event) for event in events]  # serialised once for every way out
        topic = out_topic(room)
        publications = [
            {"type": "mqtt.publish", "topic": topic, "payload": text.encode(), "qos": 1, "retain": False}
            for text in texts
        ]
        await self.stored.emit(StoredBatch(room, events, texts, publications))


def _history(room: str, after: int | None, before: int | None, limit: int) -> list[dict]:
    messages = Message.objects.filter(room__name=room)
    if after is not None:
        rows = list(messages.filter(seq__gt=after).order_by("seq")[:limit])
    else:
        if before is not None:
            messages = messages.filter(seq__lt=before)
        rows = list(messages.order_by("-seq")[:limit])[::-1]
    return [message.as_event(room) for message in rows]


async def history(room: str, *, after: int | None = None, before: int | None = None, limit: int = 50) -> list[dict]:
    """Up to ``limit`` messages, oldest first: the first ones after id ``after``, or else the newest
    ones (before id ``before``, when given: for paging back through older messages)."""
    return await database_sync_to_async(_history)(room, after, before, limit)


def _newest(room: str, limit: int) -> tuple[int, list[dict]]:
    last = Room.objects.filter(name=room).values_list("last_id", flat=True).first() or 0
    return last, _history(room, None, last + 1, limit) if limit > 0 else []


async def newest(room: str, limit: int) -> tuple[int, list[dict]]:
    """The id of the room's newest message (0 when it has none) and up to ``limit`` messages up to it."""
    return await database_sync_to_async(_newest)(room, limit)


def room_list(user=None) -> list[dict]:
    """The rooms ``user`` may see, with their last activity, most recently active first."""
    rows = visible_rooms(user).distinct().order_by(F("last_activity").desc(nulls_last=True), "name")
    return [{"name": room.name, "last_activity": room.last_activity, "messages": room.last_id} for room in rows]
