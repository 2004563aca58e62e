"""Bad input gets a clear answer, never crashes anything, and never costs the next message."""

from __future__ import annotations

import asyncio
import json
import smtplib
from email.message import EmailMessage

import pytest
import websockets

from gateway.topics import in_topic
from tests.support import ahttp, apublish, asmtp, build_mail, history, join, receive, unique


async def test_websocket_bad_frames_get_error_frames_and_the_connection_stays(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    for frame, expected in [
        ("not json", "invalid JSON"),
        (json.dumps({"text": "no message field"}), '"message"'),
        (json.dumps(["a", "list"]), '"message"'),
        (json.dumps({"message": "   "}), "non-empty"),
        (json.dumps({"message": 42}), "non-empty text"),
        (json.dumps({"message": "x" * 5000}), "longer than"),
        (b"\x00binary", "text frames"),
    ]:
        await ws.send(frame)
        error = await receive(ws, "error")
        assert expected in error["error"]
    await ws.send(json.dumps({"message": "", "ref": "m-17"}))  # the client's id comes back with the error
    assert (await receive(ws, "error"))["ref"] == "m-17"
    await ws.send(json.dumps({"message": "still here"}))
    assert (await receive(ws))["message"] == "still here"
    assert [m["message"] for m in await history(gateway, room)] == ["still here"]
    await ws.close()


async def test_websocket_oversized_frame_closes_with_1009(gateway):
    ws, _ = await join(gateway, unique())
    await ws.send(json.dumps({"message": "x" * 200_000}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await receive(ws)
    assert closed.value.rcvd.code == 1009


async def test_websocket_bad_room_or_path_is_refused(gateway):
    for path in ("/ws/chat/bad.room!/", "/ws/chat/" + "x" * 65 + "/", "/ws/nowhere/"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{gateway.http_port}{path}", open_timeout=10)
        assert refused.value.response.status_code == 403
    ws, _ = await join(gateway, unique())  # and the server is fine
    await ws.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b'{"message": 5}', "non-empty text"),
        (b"[1, 2, 3]", "must be an object"),
        (b'{"broken": ', "not valid JSON"),
        (b"{}", "must carry reading fields"),
        (b'{"sender": "s"}', "must carry reading fields"),
        (b'{"message": "ok", "id": [1]}', "'id' must be"),
        (b"", "non-empty text"),
    ],
)
async def test_mqtt_bad_payload_is_rejected_and_the_next_message_delivered(gateway, payload, reason):
    room = unique()
    ws, _ = await join(gateway, room)
    rejects = gateway.process.count("Rejected MQTT message")
    await apublish(gateway.mqtt_url, in_topic(room), payload)
    await apublish(gateway.mqtt_url, in_topic(room), "the next one")
    assert (await receive(ws))["message"] == "the next one"
    gateway.process.wait_for("Rejected MQTT message", count=rejects + 1)
    assert any(in_topic(room) in line and reason in line for line in gateway.process.lines), reason
    assert [m["message"] for m in await history(gateway, room)] == ["the next one"]
    await ws.close()


async def test_mqtt_topic_with_a_bad_room_name_is_rejected(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    await apublish(gateway.mqtt_url, "rooms/bad.room/in", "lost")
    await apublish(gateway.mqtt_url, in_topic(room), "fine")
    assert (await receive(ws))["message"] == "fine"
    gateway.process.wait_for("Rejected MQTT message on rooms/bad.room/in: no route")
    await ws.close()


async def test_mqtt_oversized_payload_is_rejected(gateway):
    room = unique()
    ws, _ = await join(gateway, room)
    await apublish(gateway.mqtt_url, in_topic(room), "x" * 70_000)
    await apublish(gateway.mqtt_url, in_topic(room), "small")
    assert (await receive(ws))["message"] == "small"
    gateway.process.wait_for(f"Rejected MQTT message on rooms/{room}/in: payload of 70000 bytes")
    await ws.close()


async def test_mail_to_unknown_domain_or_bad_room_is_refused_at_rcpt(gateway):
    room = unique()
    for recipient in (f"{room}@elsewhere.example", "bad.room!@localhost", f"{'x' * 65}@localhost"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asmtp(gateway.smtp_port, "a@example.com", [recipient], build_mail(recipient))
        code, reply = refused.value.recipients[recipient]
        assert code == 550 and b"no such recipient" in reply
    # Mixed: the good recipient is served, the bad one refused.
    refused = await asmtp(
        gateway.smtp_port, "a@example.com", [f"{room}@LOCALHOST", "x@elsewhere.example"], build_mail(room)
    )
    assert list(refused) == ["x@elsewhere.example"]
    assert [m["message"] for m in await history(gateway, room)] == ["Hello\n\nBody"]


def _send_without_size_declaration(port: int, recipient: str, content: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt(recipient)
        return client.data(content)


async def test_oversized_mail_gets_552(gateway):
    room = unique()
    big = build_mail(room, body=("x" * 76 + "\r\n") * 15_000)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # declared with SIZE=: refused at MAIL FROM
        await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], big)
    assert refused.value.smtp_code == 552
    code, _ = await asyncio.to_thread(_send_without_size_declaration, gateway.smtp_port, f"{room}@localhost", big)
    assert code == 552
    assert await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], build_mail(room)) == {}
    assert len(await history(gateway, room)) == 1


def _attachment_only(subject: str | None) -> bytes:
    mail = EmailMessage()
    mail["From"] = "carol@example.com"
    if subject:
        mail["Subject"] = subject
    mail.add_attachment(b"\x89PNG...", maintype="image", subtype="png", filename="photo.png")
    return mail.as_bytes()


async def test_mail_without_text_part(gateway):
    """A mail of files alone is posted (its subject, else the files' names); a mail of nothing is refused."""
    room = unique()
    await asmtp(gateway.smtp_port, "c@example.com", [f"{room}@localhost"], _attachment_only("Photo attached"))
    await asmtp(gateway.smtp_port, "c@example.com", [f"{room}@localhost"], _attachment_only(None))
    assert [m["message"] for m in await history(gateway, room)] == ["Photo attached", "📎 photo.png"]
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asmtp(gateway.smtp_port, "c@example.com", [f"{room}@localhost"], b"From: carol@example.com\r\n\r\n")
    assert refused.value.smtp_code == 554 and b"no subject and no text" in refused.value.smtp_error


async def test_html_only_mail_is_converted_to_text(gateway):
    room = unique()
    mail = EmailMessage()
    mail["From"] = "dave@example.com"
    mail["Subject"] = "News"
    mail.set_content("<html><body><p>Hello <b>world</b></p><script>x()</script></body></html>", subtype="html")
    await asmtp(gateway.smtp_port, "d@example.com", [f"{room}@localhost"], mail.as_bytes())
    [message] = await history(gateway, room)
    assert message["message"] == "News\n\nHello **world**"
    assert message["sender"] == "dave@example.com"


async def test_http_api_bad_requests(gateway):
    room = unique()
    url = f"{gateway.http}/api/rooms/{room}/messages"
    assert (await ahttp("POST", url, raw=b"{nope"))[0] == 400
    assert (await ahttp("POST", url, {"text": "no message"}))[0] == 400
    status, body = await ahttp("POST", url, {"message": ""})
    assert status == 400 and body == {"type": "error", "error": "'message' must be non-empty text"}
    assert (await ahttp("GET", f"{url}?after=abc"))[0] == 400
    for beyond in (2**63, -(2**63), 10**30):  # no 64-bit column holds them: refused, not a database error
        assert (await ahttp("GET", f"{url}?after={beyond}"))[0] == 400
        assert (await ahttp("GET", f"{url}?before={beyond}&limit=5"))[0] == 400
    assert (await ahttp("GET", f"{url}?after={2**63 - 1}"))[0] == 200
    assert (await ahttp("POST", f"{gateway.http}/api/rooms/bad.room!/messages", {"message": "x"}))[0] == 404
    assert (await ahttp("GET", f"{gateway.http}/chat/bad.room!/"))[0] == 404
    assert (await ahttp("DELETE", url)) == (405, {"type": "error", "error": "use GET or POST"})
    status, body = await ahttp("POST", url, raw=b'{"message": "' + b"x" * 3_000_000 + b'"}')
    assert status == 413 and "over 2621440 bytes" in body["error"]
    assert (await ahttp("POST", url, {"message": "fine"}))[0] == 201
    assert [m["message"] for m in await history(gateway, room)] == ["fine"]


async def test_the_same_recipient_twice_posts_once(gateway):
    room = unique()
    recipients = [f"{room}@localhost", f"{room}@LocalHost"]
    assert await asmtp(gateway.smtp_port, "a@example.com", recipients, build_mail(room)) == {}
    assert len(await history(gateway, room)) == 1


async def test_auto_generated_mail_is_accepted_but_never_posted(gateway):
    room = unique()
    auto = build_mail(room, "Out of office", "I am away").replace(
        "Subject:", "Auto-Submitted: auto-replied\r\nSubject:"
    )
    assert await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], auto) == {}
    bounce = build_mail(room, "Undelivered", "Mail delivery failed")
    assert await asmtp(gateway.smtp_port, "", [f"{room}@localhost"], bounce) == {}  # MAIL FROM:<>
    assert await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], build_mail(room, "Real")) == {}
    assert [m["message"] for m in await history(gateway, room)] == ["Real\n\nBody"]


async def test_the_same_mail_or_device_message_sent_twice_posts_once(gateway):
    room = unique()
    mail = build_mail(room, "Once", "only once")
    for _ in range(2):  # the sending server retries after a lost 250
        assert await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], mail) == {}
    reading = json.dumps({"temperature": 20, "sender": "s1", "id": "r-1"})
    for _ in range(2):
        await apublish(gateway.mqtt_url, in_topic(room), reading)
    await apublish(gateway.mqtt_url, in_topic(room), json.dumps({"temperature": 21, "sender": "s1", "id": "r-2"}))
    ws, _ = await join(gateway, room)
    deadline = asyncio.get_running_loop().time() + 10
    while len(messages := await history(gateway, room)) < 3:  # r-2 comes after both r-1 copies
        assert asyncio.get_running_loop().time() < deadline, messages
        await receive(ws)
    assert [m["message"] for m in messages] == ["Once\n\nonly once", "temperature: 20", "temperature: 21"]
    await ws.close()
