"""The text of one MIME text part, as a person reads it (see docs/email.md, "The message text").

Charsets are guessed the way Discourse does (UTF-8 first, then the label, then windows-1252),
``format=flowed`` is joined (RFC 3676), HTML becomes text with html2text, and line breaks become
``\\n``. Django-free, like ``gateway.mail``.
"""

from __future__ import annotations

import codecs
import re
from email.message import EmailMessage
from email.utils import collapse_rfc2231_value

import html2text

# Labels that mean "some 8-bit text": mail clients write them for anything (browsers read them as windows-1252).
WEAK_LABELS = {"ascii", "latin_1", "iso8859_1", "cp1252"}
PLACEHOLDER = re.compile(
    r"html[- ]?(capable|compatible|enabled|format|version|e-?mail|message|client)"
    r"|view (this|the) (e-?mail|message|newsletter) (in|online|with)"
    r"|does not support html|doesn't support html|kein(e|en)? html|benötigt html",
    re.IGNORECASE,
)
PLACEHOLDER_LENGTH = 300  # a plain part longer than this is somebody's text, whatever it says


def decoded(data: bytes, label: str | None) -> str:
    """``data`` as text: UTF-8 when it is valid UTF-8 (mislabelled or unlabelled mail usually is), else
    its label's charset when Python knows it, else windows-1252 (which ISO-8859-1 and ASCII labels mean
    in practice), undecodable bytes as U+FFFD."""
    try:
        declared = codecs.lookup(label).name.replace("-", "_") if label else None
    except (LookupError, UnicodeError):  # unknown, or not even text
        declared = None
    wide = declared is not None and declared.startswith(("utf_16", "utf_32"))  # never valid-looking UTF-8
    candidates = [declared] if wide else ["utf_8"]
    if declared and not wide and declared not in WEAK_LABELS:
        candidates.append(declared)
    for name in candidates:
        try:
            return data.decode(name)
        except (UnicodeError, LookupError):
            continue
    return data.decode("cp1252", errors="replace")


def redecoded(text: str) -> str:
    """A header that held raw 8-bit bytes (kept by the parser as lone surrogates) decoded like a body."""
    if not re.search("[\udc80-\udcff]", text):
        return text
    return decoded(text.encode("utf-8", "surrogateescape"), None)


def unflowed(text: str, delsp: bool) -> str:
    """RFC 3676 ``format=flowed``: a line ending in a space continues on the next line of the same
    quote depth; space-stuffing is removed, and with ``DelSp=yes`` the soft break's space too."""
    lines: list[str] = []
    paragraph: list[str] = []  # the soft-broken lines of the paragraph being joined
    depth_of_paragraph = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content  # space-stuffed
        if paragraph and depth != depth_of_paragraph:
            lines.append(_quoted("".join(paragraph), depth_of_paragraph))
            paragraph = []
        soft = content.endswith(" ") and content != "-- "  # the signature delimiter is never flowed
        paragraph.append(content[:-1] if soft and delsp else content)
        depth_of_paragraph = depth
        if not soft:
            lines.append(_quoted("".join(paragraph), depth))
            paragraph = []
    if paragraph:
        lines.append(_quoted("".join(paragraph), depth_of_paragraph))
    return "\n".join(lines)


def _quoted(line: str, depth: int) -> str:
    return ">" * depth + " " + line if depth else line


def html_to_text(html: str) -> str:
    """HTML as text: the characters themselves (no ASCII stand-ins), links kept, images dropped, no wrapping."""
    converter = html2text.HTML2Text()
    converter.unicode_snob = True  # é, ß, ©, — as they are, not e, ss, (C), --
    converter.body_width = 0  # no hard wrapping: the page wraps
    converter.ignore_images = True
    return converter.handle(html)


def part_text(part: EmailMessage) -> str:
    """A text/plain or text/html part as text with ``\\n`` line breaks (trailing white space of each line
    removed, indentation kept)."""
    data = part.get_payload(decode=True) or b""
    text = decoded(data, part.get_content_charset())
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    elif param(part, "format") == "flowed":
        text = unflowed(text, param(part, "delsp") == "yes")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def param(part: EmailMessage, name: str) -> str:
    """A Content-Type parameter, lower-cased (RFC 2231 encoded ones too), or ``""``."""
    return str(collapse_rfc2231_value(part.get_param(name, ""))).strip().lower()


def is_placeholder(text: str) -> bool:
    """A plain part that only says to read the HTML one ("This message requires an HTML-capable client")."""
    return len(text.strip()) <= PLACEHOLDER_LENGTH and PLACEHOLDER.search(text) is not None
