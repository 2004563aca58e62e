"""Who is here: browsers connected now and devices heard from recently, updated live."""

from __future__ import annotations

import json

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

    await apublish(gateway.mqtt_url, f"rooms/{room}/in", json.dumps({"temperature": 20}))
    await apublish(gateway.mqtt_url, f"rooms/{room}/in", json.dumps({"message": "hi", "sender": "sensor-7"}))
    await receive(alice)
    await receive(alice)
    carol, _ = await join(gateway, room, "?name=carol")
    event = await receive(carol, "presence")
    assert [d["name"] for d in event["devices"]] == ["device", "sensor-7"]
    assert all(d["last_seen"].endswith("Z") for d in event["devices"])
    await alice.close()
    await carol.close()
