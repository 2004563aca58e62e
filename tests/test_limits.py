"""Limits everywhere: each refuses with its answer, and the allowed thing still works right after."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket

import pytest
import websockets

from gateway.topics import in_topic
from tests.support import ahttp, apublish, asmtp, build_mail, history, join, launch_gateway, receive, unique


@pytest.fixture(scope="module")
def limited(tmp_path_factory, mosquitto):
    gateway = launch_gateway(
        tmp_path_factory.mktemp("limited"),
        mosquitto,
        RATE_BURST_SECONDS=2,
        WEBSOCKET_RATE=1,  # bursts of 2
        DEVICE_RATE=1,  # bursts of 2
        MAIL_SENDER_RATE=0.5,  # bursts of 1
        ROOM_RATE=1.5,  # bursts of 3
        SMTP_MAX_RECIPIENTS=2,
        SMTP_MAX_SESSIONS=2,
        SMTP_IDLE_TIMEOUT=1,
        WEBSOCKET_MAX_FRAME=1000,
    )
    yield gateway
    assert gateway.process.stop() == 0


async def test_websocket_connection_rate(limited):
    room = unique()
    ws, _ = await join(limited, room)
    for n in range(3):
        await ws.send(json.dumps({"message": f"m{n}"}))
    got = {"message": [], "error": []}  # a post is answered once stored, before its fan-out: either may come first
    async with asyncio.timeout(10):
        while len(got["message"]) < 2 or not got["error"]:
            frame = json.loads(await ws.recv())
            got.get(frame["type"], []).append(frame)
    assert [m["message"] for m in got["message"]] == ["m0", "m1"]
    assert "slow down" in got["error"][0]["error"]
    other, _ = await join(limited, room)  # another connection is not held back
    await other.send(json.dumps({"message": "from another tab"}))
    assert (await receive(other))["message"] == "from another tab"
    assert [m["message"] for m in await history(limited, room)] == ["m0", "m1", "from another tab"]


async def test_websocket_frame_limit_is_configurable(limited):
    ws, _ = await join(limited, unique())
    await ws.send("x" * 1500)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await receive(ws)
    assert closed.value.rcvd.code == 1009


async def test_device_rate_drops_only_qos_0(limited):
    """Anonymous posts on a room's bare topic share one rate, whatever sender each claims; another room
    is not held back."""
    room, other = unique(), unique()
    ws, _ = await join(limited, room)
    calm, _ = await join(limited, other)
    for n in range(3):
        payload = json.dumps({"message": f"d{n}", "sender": f"chatty-{n}"})
        await apublish(limited.mqtt_url, in_topic(room), payload, 0)
    await apublish(limited.mqtt_url, f"rooms/{other}/in", json.dumps({"message": "calm", "sender": "calm-device"}))
    assert [(await receive(ws))["message"] for _ in range(2)] == ["d0", "d1"]
    assert (await receive(calm))["message"] == "calm"
    limited.process.wait_for(f"rate limit: at most 1 a second for {room}/in")
    assert [m["message"] for m in await history(limited, room)] == ["d0", "d1"]


async def test_qos_1_over_the_device_and_room_rates_is_all_stored_and_delivered(limited):
    room = unique()
    ws, _ = await join(limited, room)
    for n in range(6):  # twice the room's burst, three times the device's
        await apublish(limited.mqtt_url, in_topic(room), json.dumps({"message": f"q{n}", "sender": "flusher"}))
    expected = [f"q{n}" for n in range(6)]
    assert [(await receive(ws))["message"] for _ in range(6)] == expected  # in order, the late ones coalesced
    assert [m["message"] for m in await history(limited, room)] == expected


async def test_room_rate_answers_429(limited):
    room, url = unique(), f"{limited.http}/api/rooms/{{}}/messages"
    statuses = [(await ahttp("POST", url.format(room), {"message": str(n)}))[0] for n in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert (await ahttp("POST", url.format(unique()), {"message": "another room"}))[0] == 201


async def test_mail_sender_rate_is_451_and_others_go_on(limited):
    room = unique()
    assert await asmtp(limited.smtp_port, "busy@example.com", [f"{room}@localhost"], build_mail(room, "one")) == {}
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asmtp(limited.smtp_port, "busy@example.com", [f"{room}@localhost"], build_mail(room, "two"))
    assert refused.value.smtp_code == 451
    assert await asmtp(limited.smtp_port, "calm@example.com", [f"{room}@localhost"], build_mail(room, "three")) == {}
    assert [m["message"] for m in await history(limited, room)] == ["one\n\nBody", "three\n\nBody"]


async def test_recipients_per_mail(limited):
    rooms = [unique() for _ in range(3)]
    refused = await asmtp(
        limited.smtp_port, "r@example.com", [f"{r}@localhost" for r in rooms], build_mail(rooms[0], "many")
    )
    assert refused[f"{rooms[2]}@localhost"][0] == 452
    assert [len(await history(limited, r)) for r in rooms] == [1, 1, 0]


def test_concurrent_smtp_sessions(limited):
    first = smtplib.SMTP("127.0.0.1", limited.smtp_port, timeout=10)
    second = smtplib.SMTP("127.0.0.1", limited.smtp_port, timeout=10)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", limited.smtp_port, timeout=10)
    assert refused.value.smtp_code == 421
    first.quit()
    third = smtplib.SMTP("127.0.0.1", limited.smtp_port, timeout=10)  # a place is free again
    assert third.noop()[0] == 250
    third.quit()
    second.quit()


def test_idle_smtp_session_is_closed(limited):
    with socket.create_connection(("127.0.0.1", limited.smtp_port), timeout=10) as client:
        greeting = client.recv(1000)
        assert greeting.startswith(b"220")
        assert client.recv(1000) == b""  # closed by the server after a second of silence (else: socket timeout)
