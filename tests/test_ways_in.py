"""Every way into a room reaches a WebSocket client in it, as a message object, and lands in the history."""

from __future__ import annotations

import json

from gateway.topics import in_topic, out_topic
from tests.support import (
    MqttListener,
    ahttp,
    apublish,
    asmtp,
    build_mail,
    history,
    join,
    receive,
    unique,
)


def assert_message(event: dict, room: str, text: str, source: str) -> None:
    assert event["type"] == "message"
    assert (event["room"], event["message"], event["source"]) == (room, text, source)
    assert isinstance(event["id"], int) and event["id"] > 0
    assert event["ts"].endswith("Z")


async def test_websocket_to_websocket(gateway):
    room = unique()
    alice, _ = await join(gateway, room)
    bob, _ = await join(gateway, room)
    await alice.send(json.dumps({"message": "hello bob", "sender": "alice"}))
    for ws in (alice, bob):
        event = await receive(ws)
        assert_message(event, room, "hello bob", "websocket")
        assert event["sender"] == "alice"
    assert [m["message"] for m in await history(gateway, room)] == ["hello bob"]
    await alice.close()
    await bob.close()


async def test_mqtt_into_room(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    await apublish(gateway.mqtt_url, in_topic(room), "hello from a device")
    assert_message(await receive(ws), room, "hello from a device", "mqtt")
    await apublish(gateway.mqtt_url, in_topic(room), json.dumps({"message": "structured", "sender": "sensor-7"}))
    event = await receive(ws)
    assert_message(event, room, "structured", "mqtt")
    assert event["sender"] == "sensor-7"
    assert [m["message"] for m in await history(gateway, room)] == ["hello from a device", "structured"]
    await ws.close()


async def test_mqtt_reading_carries_data(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    await apublish(gateway.mqtt_url, in_topic(room), json.dumps({"temperature": 21.5, "humidity": 40}))
    event = await receive(ws)
    assert event["data"] == {"temperature": 21.5, "humidity": 40}
    assert event["message"] == "temperature: 21.5, humidity: 40"
    assert (await history(gateway, room))[0]["data"] == {"temperature": 21.5, "humidity": 40}
    await ws.close()


async def test_email_into_room(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    refused = await asmtp(
        gateway.smtp_port,
        "alice@example.com",
        [f"{room}@localhost"],
        build_mail(f"{room}@localhost", "Lunch?", "At noon.", sender="alice@example.com"),
    )
    assert refused == {}
    event = await receive(ws)
    assert_message(event, room, "Lunch?\n\nAt noon.", "email")
    assert event["sender"] == "Alice <alice@example.com>"  # the display name with the address
    assert (await history(gateway, room))[0]["message"] == "Lunch?\n\nAt noon."
    await ws.close()


async def test_http_api_into_room(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    status, body = await ahttp(
        "POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "via API", "sender": "bot"}
    )
    assert status == 201
    assert_message(body, room, "via API", "http")
    event = await receive(ws)
    assert event == body
    listing = (await ahttp("GET", f"{gateway.http}/api/rooms/"))[1]["rooms"]
    assert any(r["name"] == room and r["messages"] == 1 and r["last_activity"] for r in listing)
    await ws.close()


async def test_every_message_is_published_to_the_out_topic(gateway):
    room = unique()
    listener = MqttListener(gateway.mqtt_url, out_topic(room))
    try:
        await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "one"})
        await apublish(gateway.mqtt_url, in_topic(room), "two")
        messages = listener.wait(2)
    finally:
        listener.close()
    published = [json.loads(m.payload) for m in messages]
    assert [(p["message"], p["source"]) for p in published] == [("one", "http"), ("two", "mqtt")]
    assert published == await history(gateway, room)


async def test_history_on_join_and_catch_up_after(gateway):
    room = unique()
    for text in ("a", "b", "c"):
        await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": text})
    ws, messages = await join(gateway, room)
    assert [m["message"] for m in messages] == ["a", "b", "c"]
    assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
    await ws.close()
    ws, missed = await join(gateway, room, f"?after={messages[0]['id']}")
    assert [m["message"] for m in missed] == ["b", "c"]
    status, page = await ahttp("GET", f"{gateway.http}/api/rooms/{room}/messages?after={messages[1]['id']}&limit=5")
    assert status == 200 and [m["message"] for m in page["messages"]] == ["c"]
    await ws.close()


async def test_healthz(gateway):
    status, body = await ahttp("GET", f"{gateway.http}/healthz")
    assert status == 200 and body["status"] == "ok"
    assert {"database", "channel_layer", "mqtt", "smtp"} <= set(body["components"])


async def test_paging_back_with_before(gateway):
    room = unique()
    ids = [
        (await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": str(n)}))[1]["id"]
        for n in range(5)
    ]
    status, page = await ahttp("GET", f"{gateway.http}/api/rooms/{room}/messages?before={ids[3]}&limit=2")
    assert status == 200 and [m["message"] for m in page["messages"]] == ["1", "2"]
    status, page = await ahttp("GET", f"{gateway.http}/api/rooms/{room}/messages?limit=2")
    assert [m["message"] for m in page["messages"]] == ["3", "4"]


async def test_reconnecting_reader_gets_everything_it_missed(gateway):
    room = unique()
    first = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "seen"})
    for n in range(120):  # more than one join's worth of history
        await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": f"missed {n}"})
    ws, missed = await join(gateway, room, f"?after={first[1]['id']}")
    assert [m["message"] for m in missed] == [f"missed {n}" for n in range(120)]
    await ws.close()


async def test_nul_characters_are_stored_as_replacement_characters(gateway):
    room = unique()
    status, body = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "a\x00b"})
    assert status == 201 and body["message"] == "a\ufffdb"
    await apublish(gateway.mqtt_url, in_topic(room), json.dumps({"temp\x00": 1}))
    await apublish(gateway.mqtt_url, in_topic(room), "next")
    ws, messages = await join(gateway, room)
    while len(messages) < 2:
        messages.append(await receive(ws))
    assert [m["message"] for m in messages] == ["a\ufffdb", "next"]
    await ws.close()
