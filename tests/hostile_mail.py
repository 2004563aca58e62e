"""Mails built to be expensive to read, each in lines an SMTP server takes (under 998 bytes)."""

from __future__ import annotations

import uuid

HEAD = b"From: mallory@example.com\r\nSubject: hostile\r\n"


def _message_id() -> bytes:
    return f"Message-ID: <{uuid.uuid4().hex}@example.com>\r\n".encode()


def nested_html(depth: int) -> bytes:
    """HTML lists nested ``depth`` deep: html2text indents each level, in time quadratic in the depth."""
    lines = b"\r\n".join(b"<ol><li>" * 50 for _ in range(depth // 50)) + b"<ol><li>" * (depth % 50)
    return HEAD + _message_id() + b"Content-Type: text/html\r\n\r\n" + lines + b"x\r\n"


def encoded_word_flood(words: int) -> bytes:
    """A Subject of ``words`` RFC 2047 encoded words, one a folded line."""
    subject = b"Subject:" + b"".join(b"\r\n =?utf-8?q?a=41?=" for _ in range(words))
    return b"From: mallory@example.com\r\n" + subject + b"\r\n" + _message_id() + b"\r\nbody\r\n"


def folded_parameters(count: int) -> bytes:
    """A Content-Type with ``count`` RFC 2231 continuation parameters, one a folded line, out of order."""
    parameters = b"".join(b";\r\n title*%d*=us-ascii'en'x%%20" % (count - n) for n in range(count))
    return HEAD + _message_id() + b"Content-Type: text/plain" + parameters + b"\r\n\r\nbody\r\n"


def long_quoted_parameter(length: int) -> bytes:
    """One Content-Type parameter: an unterminated quoted string of escapes, folded."""
    chunks = [b'a="\\' * 100] * (length // 400)
    return HEAD + _message_id() + b"Content-Type: text/plain; " + b"\r\n ".join(chunks) + b"\r\n\r\nbody\r\n"


def many_headers(count: int) -> bytes:
    return HEAD + _message_id() + b"".join(b"X-Junk-%d: v\r\n" % n for n in range(count)) + b"\r\nbody\r\n"


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % n for n in range(count))
    return HEAD + _message_id() + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"


def deep_mime(depth: int) -> bytes:
    """Multiparts nested ``depth`` deep, a text part at the bottom."""
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level) for level in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % level for level in reversed(range(depth)))
    return HEAD + _message_id() + opening + b"Content-Type: text/plain\r\n\r\nbottom" + closing
