"""Attachments as each client sends them, read as the mail workers read them (``gateway.mail``)."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest

from gateway.mail import mail_to_post
from gateway.mail_attachments import extract
from tests.attachment_mails import CORPUS, PDF, forwarded_with_pdf, outlook_inline_image, png, thunderbird_pdf

TO = "room@localhost"


@pytest.mark.parametrize(("mail", "text", "expected"), CORPUS, ids=[mail.__name__ for mail, _, _ in CORPUS])
def test_each_clients_attachments(mail, text, expected):
    post = mail_to_post(mail(TO).encode(), "alice@example.com", "localhost")
    assert text in post.text
    assert [(a.name, a.content_type, a.inline) for a in post.attachments] == expected
    assert all(a.content and "/" not in a.name for a in post.attachments)


def test_the_bytes_are_the_decoded_files():
    post = mail_to_post(thunderbird_pdf(TO, image=png()).encode())
    assert [a.content for a in post.attachments] == [PDF, png()]
    assert [a.size for a in post.attachments] == [len(PDF), len(png())]


def test_text_parts_stay_text():
    """The HTML alternative and a forwarded mail's text are the mail's text, not files; the cid image is a file."""
    post = mail_to_post(outlook_inline_image(TO).encode())
    assert "All green." in post.text and [a.name for a in post.attachments] == ["image001.png"]
    assert [a.name for a in extract_all(forwarded_with_pdf(TO))] == ["contract.pdf"]


def test_a_mail_without_files_has_none():
    post = mail_to_post(b"From: a@example.com\r\nSubject: Hi\r\n\r\nJust text\r\n")
    assert post.attachments == [] and post.text == "Hi\n\nJust text"


def test_an_unnamed_file_is_named_by_its_type():
    mail = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n"
        b"--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n--X\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--X--\r\n"
    )
    assert [(a.name, a.content_type) for a in mail_to_post(mail).attachments] == [("attachment-1.jpg", "image/jpeg")]


def extract_all(mail: str):
    return extract(BytesParser(policy=policy.default).parsebytes(mail.encode()))
