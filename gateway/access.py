"""Who may read and post in a room: public rooms for anyone, the others for their members (and staff)."""

from __future__ import annotations

from enum import Enum

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from .answers import RecentAnswers
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


def _decide(room: str, user_id: int | None, is_staff: bool) -> Verdict:
    row = Room.objects.filter(name=room).first()
    if row is None:
        return Verdict.OK if settings.ROOMS_AUTO_CREATE else Verdict.MISSING
    if row.public:
        return Verdict.OK
    if user_id is not None and (is_staff or row.members.filter(pk=user_id).exists()):
        return Verdict.OK
    return Verdict.MISSING


RULES_SECONDS = 2.0  # how long a verdict is kept: a change of a room's access applies within this


class Verdicts:
    """``await verdicts(room, user)``: ``verdict``, as decided in the last ``RULES_SECONDS`` for this
    room and user (a process's, ``gateway.runtime.Runtime.verdicts``)."""

    def __init__(self) -> None:
        self._answers = RecentAnswers(database_sync_to_async(_decide), RULES_SECONDS)

    async def __call__(self, room: str, user) -> Verdict:
        if user is None or not user.is_authenticated:
            return await self._answers(room, None, False)
        return await self._answers(room, user.pk, user.is_staff)


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
