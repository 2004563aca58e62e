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

SECTION_END = re.compile(rb"\n\r?\n")  # the blank line after a header section
FIELD_START = re.compile(rb"\n(?=[^ \t])")  # a line that is not a continuation
BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]*)"|([^\s;]+))""", re.IGNORECASE)


@dataclass(frozen=True)
class MailCaps:
    headers: int = 500  # header fields in the whole mail (every part's header section)
    header_length: int = 8000  # bytes of one header field, all its folded lines
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
                self.multipart(body, end, boundary, depth)
        elif kind.startswith(b"message/"):
            self.entity(body, end, depth + 1)

    def multipart(self, start: int, end: int, boundary: bytes, depth: int) -> None:
        """Each part between delimiter lines (``--boundary`` alone on a line), up to ``--boundary--``."""
        # A delimiter starts a line: search from the line break before ``start`` (bodies start after one).
        delimiter = re.compile(rb"\n--" + re.escape(boundary) + rb"(--)?[ \t]*\r?(?=\n|\Z)")
        previous = None
        for line in delimiter.finditer(self.content, start - 1, end):
            if previous is not None:
                self.parts += 1
                if self.parts > self.caps.parts:
                    raise OverCap(f"the mail has more than {self.caps.parts} MIME parts")
                self.entity(previous, max(previous, line.start()), depth + 1)
            if line.group(1):
                return  # the close delimiter
            previous = line.end() + 1

    def header_section(self, start: int, end: int) -> tuple[bytes, int]:
        """Count and measure the header fields from ``start``; the Content-Type value and where the body starts."""
        content, caps = self.content, self.caps
        blank = SECTION_END.search(content, start, end)
        stop, body = (blank.start() + 1, blank.end()) if blank else (end, end)
        if content.startswith((b"\r\n", b"\n"), start):  # no header fields at all
            return b"", content.index(b"\n", start) + 1
        self.encoded_words += content.count(b"=?", start, stop)
        if self.encoded_words > caps.encoded_words:
            raise OverCap(f"the headers have more than {caps.encoded_words} encoded words")
        content_type = b""
        field = start
        for following in (*(match.end() for match in FIELD_START.finditer(content, start, stop)), stop):
            if following == field:
                continue
            self.headers += 1
            if self.headers > caps.headers:
                raise OverCap(f"the mail has more than {caps.headers} header fields")
            if following - field > caps.header_length:
                raise OverCap(f"a header field is longer than {caps.header_length} bytes")
            if content[field : field + 8].lower() == b"content-":
                if following - field > caps.mime_header_length:
                    raise OverCap(f"a Content-* header field is longer than {caps.mime_header_length} bytes")
                name, _, value = content[field:following].partition(b":")
                if name.strip().lower() == b"content-type":
                    content_type = b" ".join(value.split())
            field = following
        return content_type, body
