"""A burst of malformed frames, payloads and mails, interleaved with valid ones, against one gateway:
afterwards it is healthy and every valid message is in the history exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import smtplib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from gateway.topics import in_topic
from tests.support import ahttp, apublish, asmtp, build_mail, history, join, receive, unique

BAD_FRAMES = [
    "",
    "{",
    "null",
    "[]",
    '{"message": null}',
    '{"message": ["x"]}',
    '{"message": ""}',
    '{"message": "' + "y" * 4001 + '"}',
    '{"sender": "no message"}',
    "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    '{"message": {"deep": ' * 50 + "1" + "}" * 50 + "}",
]
BAD_PAYLOADS = [b"\xff\xfe\xfd", b"{", b"[1]", b"{}", b'{"message": 7}', b'{"message": "x", "id": [1]}', b"x" * 70_000]
BAD_MAILS = [  # nothing to post (a mail of files alone is posted since issue 15)
    b"\r\n",
    b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: text/html\r\n\r\n<p> &nbsp; </p><br>\r\n--zz--\r\n",
    b"From: a@example.com\r\nSubject: \r\nContent-Type: text/plain; charset=utf-8\r\n\r\n \r\n\t\r\n",
]


async def test_hostile_burst_loses_no_valid_message(gateway):
    room = unique("hostile")
    shuffle = random.Random(20261123)
    ws, _ = await join(gateway, room)
    expected, seen = [], []

    async def next_error() -> dict:
        """The next error frame; messages arriving meanwhile are kept."""
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] == "error":
                return event
            if event["type"] == "message":
                seen.append(event["message"])

    for n, frame in enumerate(BAD_FRAMES * 3):
        await ws.send(frame)
        assert (await next_error())["error"]
        if n % 3 == 0:
            text = f"ws valid {n}"
            await ws.send(json.dumps({"message": text}))
            expected.append(text)

    payloads = [(p, False) for p in BAD_PAYLOADS * 3] + [(f"mqtt valid {n}".encode(), True) for n in range(10)]
    shuffle.shuffle(payloads)
    for payload, valid in payloads:
        await apublish(gateway.mqtt_url, in_topic(room), payload)
        if valid:
            expected.append(payload.decode())

    mails = [(m, False) for m in BAD_MAILS * 3] + [(n, True) for n in range(8)]
    shuffle.shuffle(mails)
    for mail, valid in mails:
        if valid:
            await asmtp(
                gateway.smtp_port, "a@example.com", [f"{room}@localhost"], build_mail(room, f"mail valid {mail}")
            )
            expected.append(f"mail valid {mail}\n\nBody")
        else:
            try:
                await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], mail)
            except smtplib.SMTPDataError as refusal:
                assert refusal.smtp_code == 554
            else:
                raise AssertionError(f"accepted {mail!r}")

    async with asyncio.timeout(20):  # every valid message reaches the WebSocket that stayed open
        while len(seen) < len(expected):
            seen.append((await receive(ws))["message"])
    assert sorted(seen) == sorted(expected)
    status, health = await ahttp("GET", f"{gateway.http}/healthz")
    assert status == 200, health
    stored = [m["message"] for m in await history(gateway, room)]
    assert sorted(stored) == sorted(expected)  # each exactly once, nothing else
    await ws.close()


ROOM = unique("property")
frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda raw: raw.decode("latin-1")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=50),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["message", "sender", "x"]), inner),
        max_leaves=10,
    ).map(json.dumps),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames)
def test_any_websocket_frame_gets_an_answer_and_the_connection_stays(gateway, frame):
    """Property: every frame is answered by an error or by the stored message, on the same connection."""
    with connect(gateway.ws(ROOM), open_timeout=10) as ws:
        assert json.loads(ws.recv(10))["type"] == "history"
        ws.send(frame)
        while (answer := json.loads(ws.recv(10)))["type"] == "presence":
            pass
        assert answer["type"] in ("error", "message"), answer
        ws.send(json.dumps({"message": "still open"}))
        while (answer := json.loads(ws.recv(10)))["type"] != "message" or answer["message"] != "still open":
            assert answer["type"] in ("presence", "message", "error")
