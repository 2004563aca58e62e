"""Mail: the allowlist holds for the address the room shows (the From header), and a Message-ID is one
sender's own, over real SMTP (issue 13)."""

from __future__ import annotations

import smtplib
import uuid

import pytest

from tests.members import closed_gateway, messages
from tests.support import asmtp, unique

TEAM = "team.s3cr3t@localhost"  # team's allowlist: boss@example.com and @team.example


@pytest.fixture(scope="module")
def closed(tmp_path_factory, mosquitto):
    gateway = closed_gateway(tmp_path_factory.mktemp("mail-sender"), mosquitto, MAIL_SENDER_RATE=100)
    yield gateway
    assert gateway.process.stop() == 0


def mail(to: str, subject: str, header_from: str, message_id: str | None = None) -> str:
    message_id = message_id or f"<{uuid.uuid4().hex}@example.com>"
    return (
        f"From: Someone <{header_from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\nBody\r\n"
    )


async def test_an_allowed_envelope_cannot_show_another_from(closed):
    subject = unique("impersonated")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asmtp(closed.smtp_port, "boss@example.com", [TEAM], mail(TEAM, subject, "ceo@elsewhere.example"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.7.1 the From address may not post to this room"
    assert not any(subject in text for text in messages(closed, "team"))


async def test_a_from_on_the_allowlist_is_shown(closed):
    """The From may differ from the envelope when both are allowed (a colleague of the same domain)."""
    for envelope, header_from in [("boss@example.com", "boss@example.com"), ("dev@team.example", "ops@team.example")]:
        subject = unique("allowed")
        assert await asmtp(closed.smtp_port, envelope, [TEAM], mail(TEAM, subject, header_from)) == {}
        assert any(subject in text for text in messages(closed, "team"))


async def test_a_room_without_an_allowlist_takes_any_from(closed):
    subject = unique("anyone")
    to = "open-room@localhost"
    assert await asmtp(closed.smtp_port, "a@example.com", [to], mail(to, subject, "b@example.org")) == {}
    assert any(subject in text for text in messages(closed, "open-room"))


async def test_a_message_id_is_the_senders_own(closed):
    """A retry of the same mail posts once; another sender's mail with the same Message-ID posts too,
    whoever sent first (by chance, or on purpose to suppress the genuine one)."""
    to, message_id = "open-room@localhost", f"<{uuid.uuid4().hex}@example.com>"
    first, genuine = unique("first"), unique("genuine")
    for _ in range(2):  # sent, then re-sent by a retrying server: once
        await asmtp(closed.smtp_port, "eve@example.org", [to], mail(to, first, "eve@example.org", message_id))
    await asmtp(closed.smtp_port, "bob@example.com", [to], mail(to, genuine, "bob@example.com", message_id))
    await asmtp(closed.smtp_port, "bob@example.com", [to], mail(to, genuine, "bob@example.com", message_id))
    posted = [text for text in messages(closed, "open-room") if first in text or genuine in text]
    assert len(posted) == 2 and first in posted[0] and genuine in posted[1], posted
