"""Cheap caps on a raw mail, checked on the event loop before any parsing (see docs/email.md).

The stdlib's mail parser is superlinear on some crafted headers (long quoted parameters, RFC 2231
continuations) and deep MIME trees; this scan is linear in the raw bytes (and in the nesting depth,
itself capped) and refuses those shapes before a worker spends its budget on them. It reads only
what it must: header sections, ``Content-Type`` types and boundaries, and the delimiter lines.
Django-free, like ``gateway.mail``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]*)"|([^\s;]+))""", re.IGNORECASE)


@dataclass(frozen=True)
class MailCaps:
    headers: int = 500  # header fields in the whole mail (every part's header section)
    header_length: int = 8000  # bytes of one header field, unfolded
    mime_header_length: int = 2000  # bytes of one Content-* field, which the parser reads structurally
    encoded_words: int = 300  # RFC 2047 encoded words (=?charset?q?...?=) in all headers
    parts: int = 100  # MIME parts
    depth: int = 10  # nested multipart and message/* levels


class OverCap(ValueError):
    """The mail is over one of the caps: the message says which."""


def check(content: bytes, caps: MailCaps) -> None:
    """Raise ``OverCap`` if the raw mail is over a cap."""
    _Scan(content, caps).entity(0, len(content), 0)


class _Scan:
    def __init__(self, content: bytes, caps: MailCaps) -> None:
        self.content, self.caps = content, caps
        self.headers = self.encoded_words = self.parts = 0

    def entity(self, start: int, end: int, depth: int) -> None:
        """One MIME entity (the message, or a part) in ``content[start:end]``."""
        if depth > self.caps.depth:
            raise OverCap(f"MIME parts are nested more than {self.caps.depth} deep")
        content_type, body = self.header_section(start, end)
        kind = content_type.split(b";", 1)[0].strip().lower()
        if kind.startswith(b"multipart/"):
            match = BOUNDARY.search(content_type)
            boundary = (match.group(1) or match.group(2)) if match else b""
            if boundary:
                self.multipart(body, end, b"--" + boundary, depth)
        elif kind.startswith(b"message/"):
            self.entity(body, end, depth + 1)

    def multipart(self, start: int, end: int, delimiter: bytes, depth: int) -> None:
        """Each part between delimiter lines (``--boundary`` alone on a line), up to ``--boundary--``."""
        content, previous = self.content, None
        line = start if content.startswith(delimiter, start) else self.next_line(delimiter, start, end)
        while line >= 0:
            newline = content.find(b"\n", line, end)
            rest = content[line + len(delimiter) : end if newline < 0 else newline].strip()
            if rest in (b"", b"--"):  # a delimiter line, not a longer boundary that starts the same
                if previous is not None:
                    self.parts += 1
                    if self.parts > self.caps.parts:
                        raise OverCap(f"the mail has more than {self.caps.parts} MIME parts")
                    self.entity(previous, max(previous, line - 1), depth + 1)
                if rest == b"--" or newline < 0:
                    return  # the close delimiter, or the end of the mail
                previous = newline + 1
            if newline < 0:
                return
            line = self.next_line(delimiter, newline, end)

    def next_line(self, prefix: bytes, start: int, end: int) -> int:
        """Where the next line starting with ``prefix`` begins, or -1."""
        found = self.content.find(b"\n" + prefix, start, end)
        return found + 1 if found >= 0 else -1

    def header_section(self, start: int, end: int) -> tuple[bytes, int]:
        """Count and measure the header fields from ``start``; the Content-Type value and where the body starts."""
        content, caps = self.content, self.caps
        content_type, field_start, field_length, position = b"", -1, 0, start
        while position < end:
            newline = content.find(b"\n", position, end)
            line_end = end if newline < 0 else newline
            line = content[position:line_end].rstrip(b"\r")
            following = end if newline < 0 else newline + 1
            if not line:
                position = following
                break
            if line[:1] in (b" ", b"\t") and field_start >= 0:
                field_length += len(line)
            else:
                content_type = self.finish(field_start, position, field_length, content_type)
                self.headers += 1
                if self.headers > caps.headers:
                    raise OverCap(f"the mail has more than {caps.headers} header fields")
                field_start, field_length = position, len(line)
            if field_length > caps.header_length:
                raise OverCap(f"a header field is longer than {caps.header_length} bytes")
            self.encoded_words += line.count(b"=?")
            if self.encoded_words > caps.encoded_words:
                raise OverCap(f"the headers have more than {caps.encoded_words} encoded words")
            position = following
        content_type = self.finish(field_start, position, field_length, content_type)
        return content_type, position

    def finish(self, start: int, end: int, length: int, content_type: bytes) -> bytes:
        """Check a finished field ``content[start:end]`` against the Content-* cap; its value if it is Content-Type."""
        if start < 0 or self.content[start : start + 8].lower() != b"content-":
            return content_type
        if length > self.caps.mime_header_length:
            raise OverCap(f"a Content-* header field is longer than {self.caps.mime_header_length} bytes")
        name, _, value = self.content[start:end].partition(b":")
        if name.strip().lower() == b"content-type":
            return b" ".join(value.split())
        return content_type
