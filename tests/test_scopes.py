"""Scope building in the adapters, reply combining, and the payload and mail rules."""

from __future__ import annotations

from email.message import EmailMessage

import paho.mqtt.client as paho
import pytest
from aiosmtpd.smtp import Envelope, Session
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mail import mail_to_post
from gateway.payloads import parse_payload
from gateway.rooms import InvalidMessage
from protocols.mqtt import MqttServer, MqttTopicRouter, topic
from protocols.mqtt.server import PUBLISH_PROPERTY_NAMES
from protocols.smtp.server import AsgiHandler, combine


async def noop(scope, receive, send):
    pass


def test_mqtt_scope():
    server = MqttServer(MqttTopicRouter([topic("rooms/<room>/in", noop)]), client_id="gw-1")
    assert server.topics == ["rooms/+/in"]
    message = paho.MQTTMessage(mid=7, topic=b"rooms/lobby/in")
    message.qos, message.retain, message.payload = 1, 0, b"hi"
    assert server.scope_for(message) == {
        "type": "mqtt",
        "asgi": {"version": "3.0", "spec_version": "1.0"},
        "topic": "rooms/lobby/in",
        "qos": 1,
        "retain": False,
        "dup": False,
        "properties": {},
        "client_id": "gw-1",
    }


def test_mqtt_scope_properties_are_pahos_json():
    """The scope's properties are what paho's ``Properties.json()`` gives, read only from the names a PUBLISH
    can carry."""
    server = MqttServer(MqttTopicRouter([topic("rooms/<room>/in", noop)]), client_id="gw-1")
    message = paho.MQTTMessage(mid=7, topic=b"rooms/lobby/in")
    message.properties = Properties(PacketTypes.PUBLISH)
    assert server.scope_for(message)["properties"] == {} == message.properties.json()
    message.properties.UserProperty = [("id", "42"), ("id", "43")]
    message.properties.ContentType = "text/plain"
    message.properties.CorrelationData = b"\x01\xff"
    message.properties.MessageExpiryInterval = 60
    message.properties.PayloadFormatIndicator = 1
    message.properties.ResponseTopic = "rooms/lobby/replies"
    message.properties.SubscriptionIdentifier = 3
    message.properties.TopicAlias = 9
    properties = server.scope_for(message)["properties"]
    assert properties == message.properties.json()
    assert properties["CorrelationData"] == "01ff" and properties["UserProperty"] == [("id", "42"), ("id", "43")]
    assert set(properties) == set(PUBLISH_PROPERTY_NAMES)  # every name a PUBLISH can carry, none missed
    with pytest.raises(MQTTException):  # and paho lets a PUBLISH carry no other
        message.properties.SessionExpiryInterval = 1


def test_mqtt_server_needs_a_router_or_topics():
    with pytest.raises(ValueError, match="No MqttTopicRouter"):
        MqttServer(noop)
    assert MqttServer(noop, topics=["a/#"]).topics == ["a/#"]


def test_email_scope():
    session = Session(loop=None)
    session.peer, session.host_name = ("127.0.0.1", 40000), "client.example.com"
    envelope = Envelope()
    envelope.mail_from, envelope.rcpt_tos = "a@example.com", ["lobby@localhost", "x@localhost"]
    scope = AsgiHandler(noop, None, 5).scope_for(session, envelope, "lobby@localhost")
    assert scope == {
        "type": "email",
        "asgi": {"version": "3.0", "spec_version": "1.0"},
        "mail_from": "a@example.com",
        "rcpt_to": "lobby@localhost",
        "rcpt_tos": ["lobby@localhost", "x@localhost"],
        "peer": ["127.0.0.1", 40000],
        "helo": "client.example.com",
    }


async def test_email_application_answers_become_replies():
    envelope = Envelope()
    envelope.mail_from, envelope.original_content = "a@example.com", b"Subject: x\r\n\r\nbody"
    session = Session(loop=None)
    session.peer = ("127.0.0.1", 1)

    async def accepting(scope, receive, send):
        assert (await receive()) == {"type": "email.receive", "content": b"Subject: x\r\n\r\nbody"}
        await send({"type": "email.accept"})

    async def rejecting(scope, receive, send):
        await send({"type": "email.reject", "code": 550, "reason": "5.7.1 not you"})

    async def silent(scope, receive, send):
        pass

    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    replies = {
        name: await AsgiHandler(application, None, 5).deliver(session, envelope, "lobby@localhost")
        for name, application in [
            ("accepting", accepting),
            ("rejecting", rejecting),
            ("silent", silent),
            ("failing", failing),
        ]
    }
    assert replies["accepting"].startswith("250 ")
    assert replies["rejecting"] == "550 5.7.1 not you"
    assert replies["silent"].startswith("451 ") and replies["failing"].startswith("451 ")


def test_combine_replies():
    ok, temp, perm = "250 2.0.0 OK", "451 4.3.0 later", "550 5.1.1 no"
    assert combine([ok, ok]) == ok
    assert combine([ok, temp]) == temp  # any temporary failure: the sender retries
    assert combine([perm, perm]) == perm
    assert combine([ok, perm]) == ok  # partly delivered: one DATA reply cannot say more


@pytest.mark.parametrize(
    ("payload", "text", "sender", "data"),
    [
        (b"hello", "hello", "device", None),
        (b"42", "42", "device", None),
        (b"[alarm] door open", "[alarm] door open", "device", None),
        (b'{"message": "m", "sender": null}', "m", "device", None),
        ('{"message": "h\u00e9", "sender": "s1"}'.encode(), "h\u00e9", "s1", None),
        (
            b'{"temperature": 21.5, "door": "open"}',
            "temperature: 21.5, door: open",
            "device",
            {"temperature": 21.5, "door": "open"},
        ),
        (b'{"pos": {"x": 1}}', 'pos: {"x": 1}', "device", {"pos": {"x": 1}}),
    ],
)
def test_payload_rules(payload, text, sender, data):
    post = parse_payload(payload)
    assert (post.text, post.sender, post.data) == (text, sender, data)


def test_payload_idempotency_key():
    assert parse_payload(b'{"message": "m", "id": 12}').key == "12"


@pytest.mark.parametrize("payload", [b"\xc3\x28", b"[1]", b"{bad", b"{}", b'{"message": "m", "id": {}}', b"{" * 5000])
def test_bad_payloads(payload):
    with pytest.raises(InvalidMessage):
        parse_payload(payload)


def test_mail_plain_and_html_alternative_prefers_plain():
    mail = EmailMessage()
    mail["From"] = "Bob <bob@example.com>"
    mail["Subject"] = "Status"
    mail.set_content("All good.\n")
    mail.add_alternative("<p>All <i>good</i>.</p>", subtype="html")
    post = mail_to_post(mail.as_bytes(), "bob@example.com")
    assert (post.text, post.sender, post.address) == ("Status\n\nAll good.", "Bob <bob@example.com>", "bob@example.com")


def test_mail_bad_charset_is_read_anyway_and_from_falls_back_to_envelope():
    raw = b"Subject: odd\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\ncaf\xc3\xa9\r\n"
    post = mail_to_post(raw, "env@example.com")
    assert (post.text, post.sender, post.message_id) == ("odd\n\ncaf\u00e9", "env@example.com", None)


def test_mail_with_nothing_to_post_is_empty_text_not_an_error():
    assert mail_to_post(b"From: a@example.com\r\n\r\n").text == ""  # the consumer refuses it (or posts files)


def test_reading_envelope_fields_are_not_data():
    post = parse_payload(b'{"temperature": 21.5, "sender": "sensor-7", "id": "r1"}')
    assert (post.text, post.sender, post.data, post.key) == (
        "temperature: 21.5",
        "sensor-7",
        {"temperature": 21.5},
        "r1",
    )


@pytest.mark.django_db  # consumers close stale database connections on every event
async def test_a_consumer_that_raises_is_logged_and_answered_451(caplog):
    from protocols.smtp import AsyncEmailConsumer

    class Broken(AsyncEmailConsumer):
        async def receive(self, content: bytes) -> None:
            raise RuntimeError("database is down")

    envelope = Envelope()
    envelope.mail_from, envelope.original_content = "a@example.com", b"Subject: x\r\n\r\nbody"
    session = Session(loop=None)
    session.peer = ("::1", 25, 0, 0)
    reply = await AsgiHandler(Broken.as_asgi(), None, 5).deliver(session, envelope, "lobby@localhost")
    assert reply.startswith("451 ")
    assert "database is down" in caplog.text


def test_reply_quotes_and_signature_are_stripped():
    raw = (
        b"From: bob@example.com\r\nSubject: Re: Lunch\r\nMessage-ID: <r1@example.com>\r\n\r\n"
        b"Sounds good.\r\n\r\n-- \r\nBob Smith | Example Corp\r\n\r\n"
        b"On Mon, Nov 23, 2026 at 10:00 AM Alice <alice@example.com> wrote:\r\n> Lunch at noon?\r\n"
    )
    post = mail_to_post(raw, "bob@example.com", "localhost")
    assert (post.text, post.message_id) == ("Lunch\n\nSounds good.", "<r1@example.com>")


@pytest.mark.parametrize(
    ("headers", "envelope_from"),
    [
        ("Auto-Submitted: auto-replied", "a@example.com"),
        ("Precedence: bulk", "a@example.com"),
        ("Precedence: list", "a@example.com"),
        ("X-Autoreply: yes", "a@example.com"),
        ("List-Id: <news.example.com>", "a@example.com"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=x", "a@example.com"),
        ("Subject: bounce", "<>"),
        ("Subject: ours", "lobby@chat.example.com"),
        ("From: lobby@CHAT.example.com", "a@example.com"),
    ],
)
def test_automatic_mail_is_recognised(headers, envelope_from):
    raw = f"{headers}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    assert mail_to_post(raw, envelope_from, "chat.example.com").automatic


def test_a_person_s_mail_is_not_automatic():
    raw = b"From: a@example.com\r\nAuto-Submitted: no\r\nSubject: hi\r\n\r\nbody\r\n"
    assert mail_to_post(raw, "a@example.com", "chat.example.com").automatic is None
