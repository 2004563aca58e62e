"""Who is here: browsers connected now and devices heard from recently, updated live."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer

from fanout.channel import open_channel
from fanout.redis_layer import GatewayRedisChannelLayer
from gateway import presence
from gateway.models import Presence
from gateway.presence import _Change as Change
from gateway.topics import PRESENCE_GROUP, in_topic, room_group
from tests.support import apublish, join, receive, unique


async def test_presence_follows_joins_leaves_and_devices(gateway):
    room = unique()
    alice, _ = await join(gateway, room, "?name=alice")
    assert (await receive(alice, "presence"))["browsers"] == [{"name": "alice", "count": 1}]
    bob, _ = await join(gateway, room, "?name=bob")
    for ws in (alice, bob):
        event = await receive(ws, "presence")
        assert event["browsers"] == [{"name": "alice", "count": 1}, {"name": "bob", "count": 1}]
    await bob.close()
    assert (await receive(alice, "presence"))["browsers"] == [{"name": "alice", "count": 1}]

    await apublish(gateway.mqtt_url, in_topic(room), json.dumps({"temperature": 20}))
    await apublish(gateway.mqtt_url, in_topic(room), json.dumps({"message": "hi", "sender": "sensor-7"}))
    await receive(alice)
    await receive(alice)
    carol, _ = await join(gateway, room, "?name=carol")
    event = await receive(carol, "presence")
    assert [d["name"] for d in event["devices"]] == ["device", "sensor-7"]
    assert all(d["last_seen"].endswith("Z") for d in event["devices"])
    await alice.close()
    await carol.close()


@pytest.mark.django_db
def test_joins_and_leaves_are_written_as_update_or_create_would_keep_them():
    """One row per connection key: a key seen again takes the new room and name, and keeps when it first
    joined; in one batch, a key's last change is the one that counts."""
    presence._write([Change("first", "hub.x#1", "alice")])
    joined = Presence.objects.get(channel_name="hub.x#1").joined_at
    presence._write([Change("second", "hub.x#1", "bob"), Change("second", "hub.x#2", "carol")])
    rows = Presence.objects.order_by("channel_name").values_list("channel_name", "room", "name")
    assert list(rows) == [("hub.x#1", "second", "bob"), ("hub.x#2", "second", "carol")]
    assert Presence.objects.get(channel_name="hub.x#1").joined_at == joined
    presence._write(
        [Change("second", "hub.x#1", None), Change("second", "hub.x#3", "dan"), Change("second", "hub.x#3", None)]
    )
    assert list(Presence.objects.values_list("channel_name", flat=True)) == ["hub.x#2"]
    presence._write([Change("second", "hub.x#2", None), Change("third", "hub.x#2", "erin")])  # left, came back
    assert list(Presence.objects.values_list("channel_name", "room", "name")) == [("hub.x#2", "third", "erin")]


@pytest.mark.django_db
def test_rooms_announcing_together_each_get_their_own_snapshot():
    """The snapshots of several rooms are read together: each still counts only its own browsers, and
    a room nobody is in gets empty lists, in the order the rooms were asked for."""
    presence._write(
        [Change("north", "hub.y#1", "alice"), Change("north", "hub.y#2", "alice"), Change("south", "hub.y#3", "bob")]
    )
    north, empty, south = presence._snapshots(["north", "nobody", "south"])
    assert north == {"type": "presence", "room": "north", "browsers": [{"name": "alice", "count": 2}], "devices": []}
    assert empty["room"] == "nobody" and empty["browsers"] == [] and empty["devices"] == []
    assert south["room"] == "south" and south["browsers"] == [{"name": "bob", "count": 1}]


async def _until(condition, what: str, timeout: float = 5.0) -> None:
    """Wait in the event loop until ``condition()`` holds (polling, with a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.005)


def _rows(room: str) -> list[tuple[str, str]]:
    return list(Presence.objects.filter(room=room).order_by("channel_name").values_list("channel_name", "name"))


@pytest.mark.django_db(transaction=True)  # written in the database thread
async def test_joins_are_not_waited_for_and_a_leave_never_overtakes_its_join():
    """A handshake hands its join in and goes on. Joins and leaves handed in together, or a leave
    handed in while its join is being written, end as they were handed in: the last change counts,
    and the room is announced once, with who is there after all of them."""
    layer = InMemoryChannelLayer()
    tracker = presence.PresenceTracker(layer)
    room, reader = unique(), await layer.new_channel()
    await layer.group_add(PRESENCE_GROUP, reader)
    tracker.join(room, "hub.z#1", "alice")
    tracker.leave(room, "hub.z#1")  # in the same batch as its join
    written = tracker.join(room, "hub.z#2", "bob")
    assert not written.done()  # handed in, not written yet: nobody waited
    await _until(lambda: written.done() and not tracker.changes.waiting, "the first batch is written")
    joined = tracker.join(room, "hub.z#3", "carol")
    await _until(lambda: not tracker.changes.waiting, "carol's join is taken into a batch")
    left = tracker.leave(room, "hub.z#3")  # while carol's join is being written: the next batch
    await asyncio.gather(joined, left)
    assert await database_sync_to_async(_rows)(room) == [("hub.z#2", "bob")]
    message = await asyncio.wait_for(layer.receive(reader), 5)  # the first batch's: the three changes at once
    assert message["type"] == "rooms.presence"
    assert [(group, json.loads(text)["browsers"]) for group, text in message["rooms"]] == [
        (room_group(room), [{"name": "bob", "count": 1}])
    ]
    await tracker.close()


@pytest.mark.django_db(transaction=True)
async def test_many_joins_and_leaves_in_any_interleaving_are_counted_exactly():
    """200 connections of one room, each joining and most leaving at moments of their own: the rows
    left are those of the connections still there, whatever the batches were."""
    layer = InMemoryChannelLayer()
    tracker = presence.PresenceTracker(layer)
    room = unique()
    staying = set()
    written = []
    for n in range(200):
        written.append(tracker.join(room, f"hub.w#{n}", "reader"))
        if n % 7 == 0:
            await asyncio.sleep(0.002 * (n % 5))  # some in the same batch as their neighbours, some not
        if n % 3:
            written.append(tracker.leave(room, f"hub.w#{n}"))
        else:
            staying.add(f"hub.w#{n}")
    await asyncio.gather(*written)
    assert {key for key, _ in await database_sync_to_async(_rows)(room)} == staying
    await tracker.close()


@pytest.mark.django_db(transaction=True)
async def test_closing_writes_the_changes_handed_in_and_announces_nothing_more():
    layer = InMemoryChannelLayer()
    tracker = presence.PresenceTracker(layer)
    room, reader = unique(), await layer.new_channel()
    await layer.group_add(PRESENCE_GROUP, reader)
    await tracker.join(room, "hub.v#1", "alice")
    tracker.leave(room, "hub.v#1")  # the last connection closes as the process stops
    await tracker.close()
    assert await database_sync_to_async(_rows)(room) == []
    told = []  # what the room was told: at most the join, never the leave written after the close
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(reader), 0.2)
            told += [json.loads(text)["browsers"] for group, text in message["rooms"] if group == room_group(room)]
        except TimeoutError:
            break
    assert told in ([], [[{"name": "alice", "count": 1}]])


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_rooms_announcing_at_once_reaches_every_room_in_a_few_sends_on_redis(redis_host):
    """250 rooms announced in the same moment (a server's readers closing at once): every room's snapshot
    reaches the hubs, in one layer message per written batch rather than one per room."""
    layer = GatewayRedisChannelLayer(hosts=[f"redis://{redis_host[0]}:{redis_host[1]}/0"], prefix=unique("test-pr-"))
    tracker = presence.PresenceTracker(layer)
    try:
        rooms = [unique() for _ in range(250)]
        channel, receive_one = await open_channel(layer, "hub")
        await layer.group_add(PRESENCE_GROUP, channel)
        await asyncio.gather(*(tracker.join(room, f"hub.u#{n}", "alice") for n, room in enumerate(rooms)))
        told, sends = {}, 0
        while len(told) < len(rooms):
            message = await asyncio.wait_for(receive_one(), 10)
            sends += 1
            told.update((group, json.loads(text)) for group, text in message["rooms"])
        assert sorted(told) == sorted(room_group(room) for room in rooms)
        for room in rooms:
            assert (told[room_group(room)]["room"], told[room_group(room)]["browsers"]) == (
                room,
                [{"name": "alice", "count": 1}],
            )
        assert sends <= 3  # gathered for 0.1 s: one batch, or two if the joins straddled its start
    finally:
        await tracker.close()
        await layer.flush()
        await layer.close_pools()


@pytest.mark.django_db(transaction=True)
async def test_a_moment_of_many_rooms_is_split_into_messages_of_bounded_size(monkeypatch):
    """Snapshots past ``MESSAGE_BYTES`` go in another message: every room arrives, and no message holds
    much more than the bound (one snapshot over it, at most)."""
    monkeypatch.setattr(presence, "MESSAGE_BYTES", 300)
    layer = InMemoryChannelLayer()
    tracker = presence.PresenceTracker(layer)
    reader = await layer.new_channel()
    await layer.group_add(PRESENCE_GROUP, reader)
    rooms = [unique() for _ in range(12)]
    try:
        await asyncio.gather(*(tracker.join(room, f"hub.s#{n}", "x" * 40) for n, room in enumerate(rooms)))
        told, sizes = set(), []
        while len(told) < len(rooms):
            message = await asyncio.wait_for(layer.receive(reader), 5)
            told.update(group for group, _ in message["rooms"])
            sizes.append(sum(len(text) for _, text in message["rooms"]))
        assert told == {room_group(room) for room in rooms}
        assert len(sizes) > 1 and max(sizes) < 300 + 200  # one snapshot here is ~130 characters
    finally:
        await tracker.close()


@pytest.mark.django_db(transaction=True)
async def test_a_crowded_room_is_told_less_often_and_its_last_word_is_the_room_as_it_is(monkeypatch):
    """Each announcement is a frame to every reader: a room of N readers is told at most every
    N / ``FRAMES_PER_SECOND`` seconds. A join while it is quiet is told when that time comes."""
    monkeypatch.setattr(presence, "FRAMES_PER_SECOND", 10)  # 3 readers: quiet for 0.3 s after each announcement
    layer = InMemoryChannelLayer()
    tracker = presence.PresenceTracker(layer)
    reader = await layer.new_channel()
    await layer.group_add(PRESENCE_GROUP, reader)
    room, loop = unique(), asyncio.get_running_loop()

    async def told() -> tuple[float, list[dict]]:
        message = await asyncio.wait_for(layer.receive(reader), 5)
        return loop.time(), [json.loads(text)["browsers"] for _, text in message["rooms"]]

    try:
        await asyncio.gather(*(tracker.join(room, f"hub.q#{n}", "reader") for n in range(3)))
        first, (browsers,) = await told()
        assert browsers == [{"name": "reader", "count": 3}]
        await tracker.join(room, "hub.q#3", "reader")  # written within the quiet time: not told yet
        second, (browsers,) = await told()
        assert browsers == [{"name": "reader", "count": 4}]
        assert second - first >= 0.25  # its quiet time, not the 0.1 s of a moment
    finally:
        await tracker.close()
