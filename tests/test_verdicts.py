"""gateway/access.py's Verdicts: the same rules as ``verdict``, answered from one lookup for many rooms,
and a change of a room's access still applies within the verdicts' lifetime."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import override_settings

from gateway import access
from gateway.access import Verdict, Verdicts
from gateway.models import Room
from tests.support import unique

pytestmark = pytest.mark.django_db(transaction=True)  # looked up in the database thread


def _setup() -> tuple[str, str, User, User, User]:
    public = Room.objects.create(name=unique(), public=True).name
    team = Room.objects.create(name=unique(), public=False)
    member = User.objects.create_user(unique("member-"))
    outsider = User.objects.create_user(unique("outsider-"))
    staff = User.objects.create_user(unique("staff-"), is_staff=True)
    team.members.add(member)
    return public, team.name, member, outsider, staff


@override_settings(ROOMS_AUTO_CREATE=False)
async def test_verdicts_keep_the_rules_for_every_room_and_user_asked_together():
    public, team, member, outsider, staff = await database_sync_to_async(_setup)()
    anonymous, missing = AnonymousUser(), unique()
    verdicts = Verdicts()
    asked = [(room, user) for room in (public, team, missing) for user in (anonymous, member, outsider, staff)]
    answers = await asyncio.gather(*(verdicts(room, user) for room, user in asked))  # lookups shared
    expected = [await database_sync_to_async(access.verdict)(room, user) for room, user in asked]
    assert answers == expected
    assert dict(zip(asked, answers, strict=True)) == {
        **{(public, user): Verdict.OK for user in (anonymous, member, outsider, staff)},
        (team, anonymous): Verdict.MISSING,
        (team, member): Verdict.OK,
        (team, outsider): Verdict.MISSING,  # to an outsider a members-only room is a missing one
        (team, staff): Verdict.OK,
        **{(missing, user): Verdict.MISSING for user in (anonymous, member, outsider, staff)},
    }


async def _until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)  # polling, with a deadline


async def test_a_room_closed_is_closed_to_outsiders_within_the_verdicts_lifetime():
    public, *_ = await database_sync_to_async(_setup)()
    verdicts = Verdicts(seconds=0.3)
    assert await verdicts(public, AnonymousUser()) is Verdict.OK
    await database_sync_to_async(Room.objects.filter(name=public).update)(public=False)
    closed_at = time.monotonic()

    async def refused() -> bool:
        return await verdicts(public, AnonymousUser()) is Verdict.MISSING

    await _until(refused, "the room closed is refused to anonymous readers")
    assert time.monotonic() - closed_at < 0.3 + 1.0  # its lifetime, and a lookup


async def test_one_lookup_answers_again_the_verdicts_due_with_it():
    """Readers joining 50 rooms one after another cost one lookup for all of them once the verdicts are
    due, not one per room, and what they answer is what the database says now."""
    rooms = [unique() for _ in range(50)]
    await database_sync_to_async(Room.objects.bulk_create)([Room(name=name, public=True) for name in rooms])
    verdicts = Verdicts(seconds=0.2)
    for room in rooms:
        await verdicts(room, AnonymousUser())
    await database_sync_to_async(Room.objects.filter(name__in=rooms[1:]).update)(public=False)
    all_due = max(until for _, until in verdicts.kept.values())
    await _until(lambda: _true(time.monotonic() > all_due), "the verdicts are due")
    assert await verdicts(rooms[0], AnonymousUser()) is Verdict.OK  # one lookup...
    now = time.monotonic()
    assert all(verdicts.kept[(room, None, False)][1] > now for room in rooms)  # ...answered all 50 again
    assert {verdicts.kept[(room, None, False)][0] for room in rooms[1:]} == {Verdict.MISSING}
    assert [await verdicts(room, AnonymousUser()) for room in rooms[1:]] == [Verdict.MISSING] * 49


async def _true(value: bool) -> bool:
    return value


async def test_members_are_told_apart_room_by_room_in_one_lookup():
    """Two users, two members-only rooms, each user a member of one: asked together, each gets in
    where they are a member only."""

    def setup() -> tuple[list[str], list[User]]:
        rooms = [Room.objects.create(name=unique(), public=False) for _ in range(2)]
        users = [User.objects.create_user(unique("user-")) for _ in range(2)]
        rooms[0].members.add(users[0])
        rooms[1].members.add(users[1])
        return [room.name for room in rooms], users

    rooms, users = await database_sync_to_async(setup)()
    verdicts = Verdicts()
    asked = [(room, user) for room in rooms for user in users]
    answers = await asyncio.gather(*(verdicts(room, user) for room, user in asked))
    assert answers == [Verdict.OK, Verdict.MISSING, Verdict.MISSING, Verdict.OK]


async def test_a_verdict_in_the_second_half_of_its_life_is_given_at_once_and_refreshed_meanwhile():
    """A busy room's posts and joins do not wait for the lookup every ``RULES_SECONDS``: a verdict asked
    for in the second half of its life is given at once (it is still within its life) and looked up
    again meanwhile, so a change of the room's access applies as before, within that life."""
    public, *_ = await database_sync_to_async(_setup)()
    verdicts = Verdicts(seconds=60)
    key = (public, None, False)
    assert await verdicts(public, AnonymousUser()) is Verdict.OK
    await database_sync_to_async(Room.objects.filter(name=public).update)(public=False)
    verdicts.kept[key] = (Verdict.OK, time.monotonic() + 10)  # 50 of its 60 seconds gone
    assert await verdicts(public, AnonymousUser()) is Verdict.OK  # at once: what it decided is still good
    refresh = verdicts.asking[key]
    assert await refresh is Verdict.MISSING
    assert verdicts.kept[key][1] > time.monotonic() + 50  # a fresh life
    assert await verdicts(public, AnonymousUser()) is Verdict.MISSING
