"""Who is here: browsers connected now and devices heard from recently, updated live."""

from __future__ import annotations

import json

import pytest

from gateway import presence
from gateway.models import Presence
from gateway.presence import _Change as Change
from gateway.topics import in_topic
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
