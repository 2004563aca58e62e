"""A mail's attachments (files, photos, inline ``cid:`` images) as names, types and bytes.

Free of Django, like ``gateway.mail``: it runs in the mail-parsing workers. It writes nothing; the
consumer stores what it returns with Django's storage API (``gateway.attachments``).
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from email.message import EmailMessage

NAME_MAX_LENGTH = 100
UNSAFE_IN_NAMES = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")  # controls and path separators
TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}\Z")


@dataclass
class MailAttachment:
    name: str
    content_type: str
    content: bytes
    inline: bool  # shown within the mail (``Content-Disposition: inline``, a ``cid:`` image)

    @property
    def size(self) -> int:
        return len(self.content)


def extract(message: EmailMessage) -> list[MailAttachment]:
    """Every part that is not the mail's text: whatever has a file name or an attachment disposition, and
    every leaf part that is not text (PDFs, photos, inline images), forwarded mails' included."""
    found = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue  # containers: their parts are walked
        name = _filename(part)
        if part.get_content_maintype() == "text" and name is None and not _is_attachment(part):
            continue  # a text body (of the mail or a forwarded one): the mail's text, not a file
        content = part.get_payload(decode=True) or b""
        content_type = _content_type(part)
        name = _safe_name(name) or f"attachment-{len(found) + 1}{mimetypes.guess_extension(content_type) or ''}"
        found.append(MailAttachment(name, content_type, content, inline=not _is_attachment(part)))
    return found


def caption(attachments: list[MailAttachment]) -> str:
    """The text of a mail that is only attachments: their names."""
    return ", ".join(f"📎 {attachment.name}" for attachment in attachments)


def _is_attachment(part: EmailMessage) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:  # a malformed Content-Disposition
        return False


def _filename(part: EmailMessage) -> str | None:
    try:
        return part.get_filename()  # RFC 2231 (filename*=) and RFC 2047 encoded names decoded
    except Exception:  # the stdlib's header parser raises assorted errors on hostile input
        return None


def _content_type(part: EmailMessage) -> str:
    content_type = part.get_content_type().lower()
    return content_type if TYPE.match(content_type) else "application/octet-stream"


def _safe_name(name: str | None) -> str:
    """A file name to show and to offer for saving: one line, no directories, not too long, text."""
    if not name:
        return ""
    name = name.encode("utf-8", "replace").decode()  # lone surrogates (raw 8-bit bytes) replaced
    name = UNSAFE_IN_NAMES.sub("_", name).strip(" .")
    if len(name) > NAME_MAX_LENGTH:
        _, dot, extension = name.rpartition(".")
        keep = extension if dot and len(extension) <= 10 else ""
        name = name[: NAME_MAX_LENGTH - len(keep) - 1] + ("." + keep if keep else "")
    return name
