"""A failure of the server's own on one message (a bug, not bad input, not an outage) costs only that
message: a mail is refused for good and kept for the operator, rather than answered 451 until the
sending server gives up; a WebSocket post gets an error frame and the socket stays open."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import Envelope, Session

from consumers.routing import email_router
from gateway.models import DeadLetter
from gateway.runtime import WithRuntime
from protocols.smtp.server import AsgiHandler
from tests.support import unique


def delivery(content: bytes) -> tuple[Session, Envelope]:
    envelope = Envelope()
    envelope.mail_from, envelope.original_content = "a@example.com", content
    session = Session(loop=None)
    session.peer = ("127.0.0.1", 25)
    return session, envelope


@pytest.mark.django_db(transaction=True)
async def test_an_unexpected_failure_parks_the_mail_and_refuses_it_for_good(monkeypatch, runtime):
    async def broken_post(*args, **kwargs):  # a bug in posting: nothing that can be provoked from outside
        raise RuntimeError("a bug")

    monkeypatch.setattr(runtime.rooms, "post", broken_post)
    room = unique()
    content = b"From: a@example.com\r\nSubject: kept\r\n\r\nfor the operator\r\n"
    router = email_router(runtime)
    reply = await AsgiHandler(WithRuntime(router, runtime), router, 30).deliver(*delivery(content), f"{room}@localhost")
    assert reply.startswith("554 5.3.0"), reply
    letter = await DeadLetter.objects.aget(topic=f"{room}@localhost")
    assert (letter.source, bytes(letter.payload), letter.error) == ("email", content, "RuntimeError: a bug")


@pytest.mark.django_db(transaction=True)
async def test_an_outage_while_posting_is_a_temporary_failure(monkeypatch, runtime):
    from django.db import OperationalError

    async def down(*args, **kwargs):
        raise OperationalError("the database is down")

    monkeypatch.setattr(runtime.rooms, "post", down)
    content = b"From: a@example.com\r\nSubject: later\r\n\r\nplease\r\n"
    router = email_router(runtime)
    reply = await AsgiHandler(WithRuntime(router, runtime), router, 30).deliver(
        *delivery(content), f"{unique()}@localhost"
    )
    assert reply.startswith("451 4.3.0"), reply
    assert not await DeadLetter.objects.filter(source="email").aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_post_that_fails_unexpectedly_is_answered_and_the_socket_stays(monkeypatch, runtime):
    """A failure of the server's own on one message (a bug) costs that message, not the connection."""
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from consumers.routing import websocket_urlpatterns

    real_post = runtime.rooms.post

    async def post(room, text, **kwargs):
        if text == "trips a bug":
            raise RuntimeError("a bug")
        return await real_post(room, text, **kwargs)

    monkeypatch.setattr(runtime.rooms, "post", post)
    application = WithRuntime(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), runtime)
    reader = WebsocketCommunicator(application, f"/ws/chat/{unique()}/")
    assert (await reader.connect())[0]
    try:
        assert (await reader.receive_json_from(5))["type"] == "history"
        await reader.send_json_to({"message": "trips a bug", "ref": "r1"})
        answer = await reader.receive_json_from(5)
        assert answer == {"type": "error", "error": "not posted: the server failed on this message", "ref": "r1"}
        await reader.send_json_to({"message": "still here"})
        while (event := await reader.receive_json_from(5))["type"] != "message":
            assert event["type"] == "presence"
        assert event["message"] == "still here"
    finally:
        await reader.disconnect()
