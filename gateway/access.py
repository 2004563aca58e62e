"""Who may read and post in a room: public rooms for anyone, the others for their members (and staff)."""

from __future__ import annotations

import asyncio
import time
from enum import Enum

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q

from .batches import Batches
from .models import ApiToken, Room


class Verdict(Enum):
    """To an outsider (not a member, not staff) a members-only room is ``MISSING``, exactly as a room
    that does not exist: the answers must not tell which rooms exist (docs/security.md, "Enumeration")."""

    OK = "ok"
    MISSING = "no such room"


def verdict(room: str, user) -> Verdict:
    if user is None or not user.is_authenticated:
        return _decide(room, None, False)
    return _decide(room, user.pk, user.is_staff)


Key = tuple[str, "int | None", bool]  # room, user id (None: anonymous), staff


def _decide(room: str, user_id: int | None, is_staff: bool) -> Verdict:
    return _decide_all([(room, user_id, is_staff)])[(room, user_id, is_staff)]


def _decide_all(keys: list[Key]) -> dict[Key, Verdict]:
    """``_decide`` for many rooms and users at once, in two queries at most."""
    rows = {
        name: (pk, public)
        for name, pk, public in Room.objects.filter(name__in={room for room, _, _ in keys}).values_list(
            "name", "pk", "public"
        )
    }
    rooms_of: dict[int, set[int]] = {}  # user id -> the members-only rooms asked about for them
    for room, user_id, is_staff in keys:
        if room in rows and not rows[room][1] and user_id is not None and not is_staff:
            rooms_of.setdefault(user_id, set()).add(rows[room][0])
    members: set[tuple[int, int]] = set()
    if rooms_of:  # the pairs asked about only (not every room of every user: that could be many rows)
        asked = Q()
        for user_id, room_ids in rooms_of.items():
            asked |= Q(user_id=user_id, room_id__in=room_ids)
        members = set(Room.members.through.objects.filter(asked).values_list("room_id", "user_id"))
    verdicts = {}
    for room, user_id, is_staff in keys:
        row = rows.get(room)
        if row is None:
            verdict = Verdict.OK if settings.ROOMS_AUTO_CREATE else Verdict.MISSING
        elif row[1] or (user_id is not None and (is_staff or (row[0], user_id) in members)):
            verdict = Verdict.OK
        else:
            verdict = Verdict.MISSING
        verdicts[(room, user_id, is_staff)] = verdict
    return verdicts


RULES_SECONDS = 2.0  # how long a verdict is kept: a change of a room's access applies within this
REFRESH_MOST = 1_000  # verdicts answered again in one lookup, at most
FORGET_SECONDS = 60.0  # a verdict nobody asked for this long is not answered again


class Verdicts:
    """``await verdicts(room, user)``: ``verdict``, as decided in the last ``RULES_SECONDS`` for this
    room and user (a process's, ``gateway.runtime.Runtime.verdicts``).

    A verdict that is missing or too old is looked up, and with it every other verdict asked for in
    the last ``FORGET_SECONDS`` that is due within ``RULES_SECONDS`` / 2: one trip to the database
    thread and two queries answer them all, so readers joining many rooms (a restart) cost a lookup
    every second or so, not one per room. The lookups asked for while one runs go in the next one;
    everyone asking for the same verdict meanwhile waits for that one lookup. Failures are not kept.
    A verdict asked for in the second half of its life is looked up again meanwhile (refreshed ahead),
    so a busy room's posts and joins do not wait for the lookup every ``RULES_SECONDS``."""

    def __init__(self, seconds: float = RULES_SECONDS) -> None:
        self.seconds = seconds
        self.kept: dict[Key, tuple[Verdict, float]] = {}  # key -> (verdict, good until)
        self.asked: dict[Key, float] = {}  # key -> when it was last asked for
        self.asking: dict[Key, asyncio.Future[Verdict]] = {}
        self.lookups: Batches[Key, Verdict] = Batches(self._look_up)

    async def __call__(self, room: str, user) -> Verdict:
        if user is None or not user.is_authenticated:
            key: Key = (room, None, False)
        else:
            key = (room, user.pk, user.is_staff)
        now = time.monotonic()
        self.asked[key] = now
        found = self.kept.get(key)
        if found is not None and found[1] > now:
            if found[1] - now < self.seconds / 2 and key not in self.asking:
                self._look_up_soon(key)  # refreshed ahead: nobody waits for it
            return found[0]
        asking = self.asking.get(key) or self._look_up_soon(key)
        return await asyncio.shield(asking)  # a caller that gives up does not cancel it for the others

    def _look_up_soon(self, key: Key) -> asyncio.Future[Verdict]:
        asking = self.asking[key] = self.lookups.submit(key)
        asking.add_done_callback(lambda done: self._done(key, done))
        return asking

    def _done(self, key: Key, done: asyncio.Future[Verdict]) -> None:
        if self.asking.get(key) is done:
            del self.asking[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failed refresh ahead is asked again by the next caller

    async def _look_up(self, keys: list[Key]) -> list[Verdict]:
        started = time.monotonic()
        wanted = set(keys)
        due, forget = started + self.seconds / 2, started - FORGET_SECONDS
        for key, asked in list(self.asked.items()):
            if asked < forget:  # nobody asks for it any more
                del self.asked[key]
                self.kept.pop(key, None)
            elif len(wanted) < REFRESH_MOST and self.kept.get(key, (None, 0.0))[1] < due:
                wanted.add(key)
        answers = await database_sync_to_async(_decide_all)(list(wanted))
        until = started + self.seconds  # as old as the moment it was asked, not answered
        for key, verdict in answers.items():
            self.kept[key] = (verdict, until)
        return [answers[key] for key in keys]


def mail_rules(name: str) -> Room | None:
    """What decides whether a room takes a mail: whether it exists, its open and secret addresses, its
    sender allowlist."""
    return Room.objects.filter(name=name).only("name", "email_open", "email_token", "email_allowlist").first()


def visible_rooms(user):
    """The rooms a user may see listed."""
    rooms = Room.objects.all()
    if user is not None and user.is_authenticated and user.is_staff:
        return rooms
    if user is not None and user.is_authenticated:
        return rooms.filter(public=True) | rooms.filter(members=user)
    return rooms.filter(public=True)


async def token_user(headers: list[tuple[bytes, bytes]] | dict) -> object:
    """The user an ``Authorization: Bearer <key>`` header names, or an anonymous user."""
    value = dict(headers).get(b"authorization", b"").decode("latin-1")
    scheme, _, key = value.partition(" ")
    if scheme.lower() in ("bearer", "token") and key.strip():
        token = await ApiToken.objects.select_related("user").filter(key=key.strip()).afirst()
        if token is not None and token.user.is_active:
            return token.user
    return AnonymousUser()


async def scope_user(scope: dict) -> object:
    """The session's user (AuthMiddlewareStack), else the API token's."""
    user = scope.get("user")
    if user is not None and user.is_authenticated:
        return user
    return await token_user(scope.get("headers", []))
