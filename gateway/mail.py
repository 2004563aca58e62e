"""Turn a raw mail into the text of a room message (see README, "Email")."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr

import html2text

from .rooms import InvalidMessage


def _html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: the page wraps
    converter.ignore_images = True
    return converter.handle(html)


def _content(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        # Unknown or lying charset: keep what can be read.
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace")


def body_text(message: EmailMessage) -> str:
    """The plain-text body, or the HTML body converted to text; empty if there is neither."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    text = _content(part)
    if part.get_content_type() == "text/html":
        text = _html_to_text(text)
    return text.strip()


def mail_to_post(content: bytes, envelope_from: str = "") -> tuple[str, str]:
    """``(text, sender)``: the Subject and the body, and the From address."""
    message = BytesParser(policy=policy.default).parsebytes(content)
    subject = str(message.get("subject", "") or "").strip()
    body = body_text(message)
    text = "\n\n".join(part for part in (subject, body) if part)
    if not text:
        raise InvalidMessage("the mail has no subject and no text or HTML part to post")
    sender = parseaddr(str(message.get("from", "") or ""))[1] or envelope_from or "unknown"
    return text, sender
