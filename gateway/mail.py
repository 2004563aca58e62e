"""Turn a raw mail into a room message (see docs/email.md, "The message text"): the Subject, the sender,
the body (``mail_text`` reads a part, ``mail_reply`` keeps what the sender wrote), whether it is automatic."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr

from .mail_attachments import MailAttachment, caption, extract
from .mail_reply import new_text
from .mail_text import is_placeholder, part_text, redecoded

SURROGATES = re.compile("[\ud800-\udfff]")  # raw 8-bit bytes the parser kept as lone surrogates
NOTHING_TO_POST = "the mail has no subject and no text or HTML part to post"
PLAIN_KEY_LENGTH = 200  # longer Message-IDs are hashed (the key column holds 300)
SUBJECT_PREFIX = re.compile(r"^(?:\s*(?:re|aw|sv|vs|antw|fwd?|fw|wg|tr|rv|enc)(?:\[\d+\]|\(\d+\))?\s*:)+\s*", re.I)
FORWARD_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv)\s*:\s*)*(?:fwd?|fw|wg|tr|rv|enc)\s*:", re.I)  # a forward
NAME_LENGTH = 80  # of a display name: the sender is cut at 200 characters, and the address must stay in them
FORWARD_HEADERS = ("from", "date", "subject", "to")  # shown above a forwarded mail's text
DELIMITER = re.compile(rb'^--([^\s"]{1,70})\r?$', re.MULTILINE)  # a MIME delimiter line (RFC 2046: 1-70 chars)


class UnreadableMail(ValueError):
    """The mail itself cannot be posted (a permanent refusal). This module stays free of Django, so
    that mail-parsing worker processes can import it without setting Django up."""


@dataclass
class MailPost:
    text: str
    sender: str
    message_id: str | None
    automatic: str | None  # why the mail is auto-generated (never posted, never answered), or None
    attachments: list[MailAttachment] = field(default_factory=list)  # gateway.mail_attachments
    address: str = ""  # the From address (``sender`` may show the name with it): the allowlist's and key's

    @property
    def key(self) -> str | None:
        """The idempotency key of the post (a re-sent mail posts once): the sender's address and the
        Message-ID, as written when that is short printable ASCII, else its SHA-256 (SMTPUTF8 ids, raw 8-bit
        bytes, over-long ids). The sender is part of it: another sender's mail with the same Message-ID
        (by chance, or sent first on purpose to suppress the genuine one) is another post."""
        if not self.message_id:
            return None
        scoped = f"{(self.address or self.sender).lower()}:{self.message_id}"
        if scoped.isascii() and scoped.isprintable() and len(scoped) <= PLAIN_KEY_LENGTH:
            return f"email:{scoped}"
        return "email:sha256:" + hashlib.sha256(scoped.encode("utf-8", "surrogatepass")).hexdigest()


def header(message: EmailMessage, name: str) -> str:
    """A header's text, decoded; a header the parser chokes on (broken address syntax) is taken as written."""
    try:
        return str(message.get(name, "") or "")
    except Exception:  # the stdlib's header parser raises assorted errors on hostile input
        return raw_header(message, name)


def raw_header(message: EmailMessage, name: str) -> str:
    """A header as written, for the ones that are plain tokens (Message-ID, Precedence …): the parser's
    structured reading costs as much as the rest of a mail."""
    name = name.lower()
    return next((str(value) for key, value in message.raw_items() if key.lower() == name), "")


def subject_text(message: EmailMessage) -> str:
    """The Subject without its reply and forward prefixes (``Re:``, ``AW:``, ``SV:``, ``Fwd:``, ``WG:`` …)."""
    return SUBJECT_PREFIX.sub("", header_text(message, "subject")).strip()


def header_text(message: EmailMessage, name: str) -> str:
    """A header's text: encoded words decoded, and raw 8-bit bytes (which the parser cannot read) decoded
    as a body's are (UTF-8, else windows-1252)."""
    raw = raw_header(message, name)
    if raw == redecoded(raw):
        return header(message, name)
    return " ".join(redecoded(raw).split())


def sender_of(message: EmailMessage, envelope_from: str) -> tuple[str, str]:
    """The sender as shown (``Jürgen Müller <juergen@example.com>``, or the bare address) and the address.
    The name is read from the header as written, so that an old-style ``root@host (Cron Daemon)`` keeps it."""
    name, address = parseaddr(redecoded(raw_header(message, "from")))
    address = address or envelope_from or "unknown"
    name = " ".join(encoded_words(name).replace("<", "").replace(">", "").split()).strip("\"' ")  # one <address>
    shown = f"{name[:NAME_LENGTH]} <{address}>" if name and name.lower() != address.lower() else address
    return shown, address


def encoded_words(text: str) -> str:
    """RFC 2047 encoded words (``=?UTF-8?Q?J=C3=BCrgen?=``) decoded; text that has none as it is."""
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, UnicodeError, ValueError):  # an unknown charset or broken encoding: as written
        return text


def body_text(message: EmailMessage, forward: bool = False) -> str:
    """What the sender wrote: the plain body (or the HTML one when there is none, or the plain one is only a
    placeholder), without the quoted history and signature, then any mail forwarded as an attachment."""
    message = repaired(message)
    part = message.get_body(preferencelist=("plain", "html"))
    text = part_text(part) if part is not None else ""
    if part is not None and part.get_content_type() == "text/plain" and is_placeholder(text):
        html = message.get_body(preferencelist=("html",))
        text = part_text(html) if html is not None else text
    texts = [new_text(text, forward)] + [forwarded_text(attached) for attached in attached_mails(message)]
    return "\n\n".join(text for text in texts if text.strip())


def repaired(message: EmailMessage) -> EmailMessage:
    """A multipart whose boundary is missing or wrong (the parser keeps its body as one string) read again
    with the delimiter its parts actually use, or as plain text when there is none: never MIME syntax."""
    if message.get_content_maintype() != "multipart" or message.is_multipart():
        return message
    body = str(message.get_payload()).encode("utf-8", "surrogateescape")
    delimiter = DELIMITER.search(body)
    if delimiter is None:
        head = b"Content-Type: text/plain\r\n\r\n"
    else:
        head = b'Content-Type: multipart/mixed; boundary="' + delimiter.group(1) + b'"\r\n\r\n'
    return BytesParser(policy=policy.default).parsebytes(head + body)


def attached_mails(message: EmailMessage) -> list[EmailMessage]:
    """Mails forwarded as ``message/rfc822`` attachments."""
    if not message.is_multipart():
        return []
    return [
        part.get_payload(0)
        for part in message.iter_attachments()
        if part.get_content_type() == "message/rfc822" and part.is_multipart()
    ]


def forwarded_text(message: EmailMessage) -> str:
    """A forwarded mail as a mail client quotes it inline: a marker, its From, Date, Subject and To, its text."""
    lines = ["---------- Forwarded message ---------"]
    for name in FORWARD_HEADERS:
        if value := " ".join(header_text(message, name).split()):
            lines.append(f"{name.capitalize()}: {value}")
    body = body_text(message, forward=True)
    return "\n".join(lines) + ("\n\n" + body if body else "")


AUTO_REPLY_SUBJECT = re.compile(
    r"^(?:out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|abwesenheitsnotiz|"
    r"automatische antwort|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica)\s*(?::|$)",
    re.IGNORECASE,
)
MAILER_DAEMONS = ("mailer-daemon", "postmaster")


def automatic(
    message: EmailMessage, envelope_from: str, own_domain: str, header_from: str, subject: str = ""
) -> str | None:
    """Why a mail was generated by a machine (bounce, auto-reply, list, our own), or None; ``header_from``
    is the From header's address, ``subject`` the Subject as written."""
    if envelope_from in ("", "<>"):
        return "empty envelope sender (a bounce)"
    if message.get_content_type() == "multipart/report":
        return "a delivery or read report"
    auto_submitted = (raw_header(message, "auto-submitted") or "no").strip().lower()
    if auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    precedence = raw_header(message, "precedence").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    if any(name in message for name in ("x-autoreply", "x-autorespond", "list-id")):
        return "an auto-reply or list header"
    for address in (envelope_from, header_from):
        local, _, domain = address.lower().rpartition("@")
        if domain == own_domain:
            return "sent from one of our own addresses"
        if local in MAILER_DAEMONS:
            return f"sent by {local} (a bounce)"
    if AUTO_REPLY_SUBJECT.match(subject.strip()):
        return "an auto-reply subject"
    return None


def mail_to_post(content: bytes, envelope_from: str = "", own_domain: str = "") -> MailPost:
    """The Subject and the new text of the body (empty when the mail has neither: the consumer decides),
    the sender, the Message-ID, and whether it is automatic."""
    message = BytesParser(policy=policy.default).parsebytes(content)
    subject = subject_text(message)
    body = body_text(message, forward=bool(FORWARD_PREFIX.match(header_text(message, "subject"))))
    attachments = extract(message)
    text = "\n\n".join(part for part in (subject, body) if part) or caption(attachments)
    sender, address = sender_of(message, envelope_from)
    message_id = " ".join(raw_header(message, "message-id").split()) or None  # (unfolded)
    automatically = automatic(message, envelope_from, own_domain.lower(), address, header_text(message, "subject"))
    return MailPost(readable(text), readable(sender), message_id, automatically, attachments, address=readable(address))


def truncated(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a visible marker saying how long the mail was."""
    if len(text) <= limit:
        return text
    marker = f"\n\n… [truncated: the mail was {len(text)} characters]"
    return text[: max(limit - len(marker), 0)].rstrip() + marker


def readable(text: str) -> str:
    """Lone surrogates (undecodable 8-bit bytes) as the replacement character: they cannot be stored."""
    return SURROGATES.sub("\ufffd", text)
