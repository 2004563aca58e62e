"""Real-shaped mail (each client's MIME structure, encodings and quoting) and the text each must post.

``tests/mail_corpus/<name>.eml`` is a mail as sent (CRLF line ends, raw 8-bit bytes where the client
writes them); ``<name>.txt`` is ``From: <sender as shown>``, a blank line, and the exact text. Mails
under ``automatic/`` are auto-generated: accepted and never posted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mail import mail_to_post, truncated

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


def test_a_mail_without_any_text_part_is_empty_not_refused():
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--b--\r\n"
    )
    assert mail_to_post(raw, "a@example.com", "localhost").text == ""
