"""Real-shaped mail (each client's MIME structure, encodings and quoting) and the text each must post.

``tests/mail_corpus/<name>.eml`` is a mail as sent (CRLF line ends, raw 8-bit bytes where the client
writes them); ``<name>.txt`` is ``From: <sender as shown>``, a blank line, and the exact text. Mails
under ``automatic/`` are auto-generated: accepted and never posted.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from gateway.mail import NOTHING_TO_POST, mail_to_post, truncated
from tests.support import asmtp, history, unique

CORPUS = Path(__file__).parent / "mail_corpus"
MAILS = sorted(path.stem for path in CORPUS.glob("*.eml"))
AUTOMATIC = sorted(path.stem for path in (CORPUS / "automatic").glob("*.eml"))


def expected(name: str) -> tuple[str, str]:
    head, _, text = (CORPUS / f"{name}.txt").read_text(encoding="utf-8").partition("\n\n")
    return head.removeprefix("From: "), text.removesuffix("\n")


def test_the_corpus_is_there():
    assert len(MAILS) >= 18 and len(AUTOMATIC) >= 6
    assert all((CORPUS / f"{name}.txt").exists() for name in MAILS)


@pytest.mark.parametrize("name", MAILS)
def test_a_real_shaped_mail_posts_what_its_sender_wrote(name):
    post = mail_to_post((CORPUS / f"{name}.eml").read_bytes(), "envelope@example.net", "localhost")
    sender, text = expected(name)
    assert (post.sender, post.text, post.automatic) == (sender, text, None)
    assert "\r" not in post.text


@pytest.mark.parametrize("name", AUTOMATIC)
def test_an_auto_generated_mail_is_not_posted(name):
    post = mail_to_post((CORPUS / "automatic" / f"{name}.eml").read_bytes(), "envelope@example.net", "localhost")
    assert post.automatic


def test_the_sender_address_stays_apart_from_the_name_shown():
    post = mail_to_post((CORPUS / "thunderbird_flowed_signature.eml").read_bytes(), "x@example.net", "localhost")
    assert (post.sender, post.address) == ("Jürgen Müller <juergen@example.de>", "juergen@example.de")
    assert post.key == "email:juergen@example.de:<3f1c2a9e-7b1d-4c55-9a0e-1d2b3c4d5e6f@example.de>"


def test_a_long_text_is_cut_with_a_marker_within_the_limit():
    text = "word " * 2000
    cut = truncated(text, 4000)
    assert len(cut) <= 4000 and cut.endswith("… [truncated: the mail was 10000 characters]")
    assert cut.startswith("word word") and truncated("short", 4000) == "short"


def test_a_mail_with_only_empty_or_quoted_text_is_empty_not_refused():
    """``mail_to_post`` does not refuse: the consumer decides (a mail of files alone is posted)."""
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\n \r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p></p>\r\n--b--\r\n"
    )
    assert mail_to_post(raw, "a@example.com", "localhost").text == ""


# End to end: over real SMTP into a running gateway, read back from the room's history.

OVER_SMTP = [
    "thunderbird_flowed_signature",
    "outlook_top_posted_windows1252",
    "owa_html_only_entities",
    "thunderbird_forward_attached",
    "windows1252_subject_and_body_8bit",
    "mutt_patch_and_code",
    "thunderbird_inline_answers",
    "iphone_reply_delsp",
]


def addressed(name: str, room: str) -> bytes:
    """The corpus mail sent to ``room`` (its To header rewritten), under a Message-ID of its own."""
    raw = (CORPUS / f"{name}.eml").read_bytes().replace(b"lobby@localhost", f"{room}@localhost".encode())
    return raw.replace(b"\r\nMessage-I", b"\r\nX-Was-Message-I")  # the fixture's gateway may have seen it


@pytest.mark.parametrize("name", OVER_SMTP)
async def test_a_real_shaped_mail_over_smtp_is_posted_as_its_text(gateway, name):
    room = unique("corpus")
    assert await asmtp(gateway.smtp_port, "envelope@example.net", [f"{room}@localhost"], addressed(name, room)) == {}
    [message] = await history(gateway, room)
    assert (message["sender"], message["message"], message["source"]) == (*expected(name), "email")


async def test_an_auto_reply_over_smtp_is_accepted_and_not_posted(gateway):
    room = unique("corpus")
    await asmtp(gateway.smtp_port, "bob@example.com", [f"{room}@localhost"], addressed("automatic/out_of_office", room))
    mail = (CORPUS / "no_charset_utf8.eml").read_bytes().replace(b"lobby@localhost", f"{room}@localhost".encode())
    await asmtp(gateway.smtp_port, "kim@example.com", [f"{room}@localhost"], mail)  # then a person's mail
    assert [message["message"] for message in await history(gateway, room)] == ["no charset\n\nÅngström 日本"]


async def test_a_mail_over_the_length_limit_is_posted_cut_with_a_marker(gateway):
    room = unique("corpus")
    lines = [f"line {number:05d} of the long report" for number in range(400)]
    body, posted_length = "\r\n".join(lines), len("long\n\n" + "\n".join(lines))  # 12,005 characters
    mail = f"From: Rita <rita@example.com>\r\nSubject: long\r\n\r\n{body}\r\n"
    assert await asmtp(gateway.smtp_port, "rita@example.com", [f"{room}@localhost"], mail) == {}
    [message] = await history(gateway, room)
    assert len(message["message"]) <= 4000 and message["message"].startswith("long\n\nline 00000 of the long report")
    assert message["message"].endswith(f"… [truncated: the mail was {posted_length} characters]")


async def test_a_mail_with_nothing_to_post_is_refused_over_smtp(gateway):
    room = unique("corpus")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], b"From: a@example.com\r\n\r\n\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error) == (554, b"5.6.0 " + NOTHING_TO_POST.encode())


@pytest.mark.parametrize(
    ("subject", "automatic"),
    [
        ("Automatic reply: Budget", True),
        ("Out of Office", True),
        ("AutoReply: Ihre Nachricht", True),
        ("Re: Out of office plans for December", False),
        ("Autoreply rules in our mail server", False),
    ],
)
def test_an_auto_reply_is_known_by_its_subject_not_by_a_phrase_in_it(subject, automatic):
    raw = f"From: bob@example.com\r\nSubject: {subject}\r\n\r\nText\r\n".encode()
    assert bool(mail_to_post(raw, "bob@example.com", "localhost").automatic) is automatic


def test_a_display_name_cannot_show_a_second_address():
    raw = b'From: "Boss <ceo@example.com>" <eve@example.org>\r\nSubject: pay\r\n\r\nNow\r\n'
    post = mail_to_post(raw, "eve@example.org", "localhost")
    assert (post.sender, post.address) == ("Boss ceo@example.com <eve@example.org>", "eve@example.org")
