"""Reading a mail safely: the caps on the raw bytes, the worker pool's budget, the post's key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import mail_workers
from gateway.mail import MailPost, UnreadableMail
from gateway.mail_caps import MailCaps, OverCap, check
from tests import hostile_mail
from tests.support import ROOT

CAPS = MailCaps()


def forwarded_reply_with_attachments() -> bytes:
    """What real mail looks like at its most structured: a reply in a long thread, text and HTML,
    an attachment, and the forwarded original as message/rfc822."""
    original = EmailMessage()
    original["From"], original["Subject"] = "Carol <carol@example.com>", "=?utf-8?q?R=C3=A9union?="
    original.set_content("The original.\n")
    mail = EmailMessage()
    mail["From"], mail["To"] = "Bob <bob@example.com>", ", ".join(f"p{n}@example.com" for n in range(50))
    mail["Subject"] = "Re: " + "=?utf-8?b?w6k=?= " * 20
    mail["References"] = " ".join(f"<{n}.thread@example.com>" for n in range(60))
    for n in range(30):
        mail["Received"] = f"from relay{n}.example.com by mx.example.com; Sat, 5 Dec 2026 08:00:{n:02} +0000"
    mail.set_content("Agreed.\n\nOn Friday Carol wrote:\n> The original.\n")
    mail.add_alternative("<p>Agreed.</p><blockquote>The original.</blockquote>", subtype="html")
    mail.add_attachment(b"\x89PNG" * 1000, maintype="image", subtype="png", filename="photo " * 30 + ".png")
    mail.add_attachment(original)
    return mail.as_bytes()


def test_real_mail_is_under_every_cap():
    check(forwarded_reply_with_attachments(), CAPS)
    check(hostile_mail.many_parts(CAPS.parts), CAPS)
    check(hostile_mail.deep_mime(CAPS.depth - 1), CAPS)
    check(hostile_mail.encoded_word_flood(CAPS.encoded_words), CAPS)


@pytest.mark.parametrize(
    ("mail", "reason"),
    [
        (hostile_mail.many_headers(CAPS.headers), f"more than {CAPS.headers} header fields"),
        (hostile_mail.encoded_word_flood(CAPS.encoded_words + 1), f"more than {CAPS.encoded_words} encoded words"),
        (hostile_mail.folded_parameters(400), "header field is longer than"),
        (hostile_mail.long_quoted_parameter(4000), f"Content-* header field is longer than {CAPS.mime_header_length}"),
        (hostile_mail.many_parts(CAPS.parts + 1), f"more than {CAPS.parts} MIME parts"),
        (hostile_mail.deep_mime(CAPS.depth + 5), f"nested more than {CAPS.depth} deep"),
        (b"Subject: x\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\nbody", "longer than 8000 bytes"),
    ],
)
def test_over_a_cap_says_which(mail, reason):
    with pytest.raises(OverCap, match=reason.replace("*", r"\*")):
        check(mail, CAPS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                b"\r\n",
                b"\n",
                b"--b",
                b"--b--",
                b" ",
                b"Content-Type: multipart/mixed; boundary=b",
                b"Content-Type: message/rfc822",
                b"X: =?",
                b"\r\n\r\n",
                b"x",
            ]
        ),
        max_size=60,
    ).map(b"".join)
    | st.binary(max_size=2000)
)
def test_any_bytes_pass_or_are_over_a_cap(content):
    try:
        check(content, CAPS)
    except OverCap as over:
        assert str(over)


def test_the_scan_is_linear():
    """Ten times the mail, about ten times the time (a quadratic scan would be a hundred)."""
    small, large = hostile_mail.many_parts(10), hostile_mail.many_parts(100)
    caps = MailCaps(parts=1000)

    def cost(mail: bytes) -> float:
        start = time.perf_counter()
        for _ in range(50):
            check(mail, caps)
        return time.perf_counter() - start

    assert cost(large) < 30 * cost(small)


@pytest.mark.parametrize(
    "message_id",
    ["<caf\u00e9@exämple.com>", "<raw\udce9\udcff@example.com>", "<" + "x" * 400 + "@example.com>", "<a\tb@c>"],
)
def test_keys_of_odd_message_ids_are_short_ascii_hashes(message_id):
    key = MailPost("t", "s", message_id, None).key
    assert key.startswith("email:sha256:") and len(key) == 13 + 64 and key.isascii()
    assert key == MailPost("other text", "s", message_id, None).key  # the same id, the same key
    assert key != MailPost("t", "s", message_id + "x", None).key
    assert key != MailPost("t", "other", message_id, None).key  # another sender's id is another key


def test_keys_of_plain_message_ids_are_readable_and_scoped_to_the_sender():
    key = MailPost("t", "Bob@Example.com", "<abc@example.com>", None).key
    assert key == "email:bob@example.com:<abc@example.com>"
    assert MailPost("t", "eve@example.com", "<abc@example.com>", None).key != key
    assert MailPost("t", "s", None, None).key is None


@pytest.fixture
async def workers():
    readers = mail_workers.MailReaders()
    yield readers
    readers.shutdown()


async def test_a_mail_over_its_budget_is_unreadable_and_the_next_is_read(workers):
    start = time.monotonic()
    with pytest.raises(UnreadableMail, match="took more than 0.5 s to read"):
        await workers.parse(hostile_mail.nested_html(8000), "m@example.com", "localhost", budget=0.5, workers=1)
    assert time.monotonic() - start < 5  # killed, not left to run for the seconds it needs
    good = b"From: a@example.com\r\nSubject: after\r\n\r\nstill read\r\n"
    post = await workers.parse(good, "a@example.com", "localhost", budget=0.5, workers=1)
    assert post.text == "after\n\nstill read"


async def test_a_mail_with_nothing_to_post_comes_back_empty_for_the_consumer_to_judge(workers):
    post = await workers.parse(b"From: a@example.com\r\n\r\n", "a@example.com", "localhost", budget=2, workers=1)
    assert (post.text, post.sender) == ("", "a@example.com")


async def test_a_stopped_pool_is_replaced_by_the_next_mail(workers):
    good = b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    assert (await workers.parse(good, "a@example.com", "localhost", budget=2, workers=1)).text == "s\n\nbody"
    assert workers.health() == (True, "running")
    workers.shutdown()
    assert workers.health()[0]
    assert (await workers.parse(good, "a@example.com", "localhost", budget=2, workers=1)).text == "s\n\nbody"


def test_the_workers_modules_do_not_need_django():
    """Workers import gateway.mail (and the pool's own module) without Django set up, so neither may
    import anything that does: importing Django here would fail, or start the worker slowly."""
    code = "import sys, gateway.mail, gateway.mail_caps; assert 'django' not in sys.modules, sorted(sys.modules)"
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
