"""The new part of a reply: what the person wrote, without the history their client appended.

Only a *trailing* quoted history goes (the ``> `` lines at the end and the "On … wrote:" line above
them), so answers written inline between quotes stay; a top-posted Outlook history ("From: … Sent: …",
"-----Original Message-----") goes unless the mail is a forward; a signature after the ``-- ``
delimiter goes, and a phone's "Sent from my iPhone". Indentation is never touched. The "wrote" and
"From:" patterns, in several languages, are mail-parser-reply's (its public ``MAIL_LANGUAGES``); its
parser itself strips every line's indentation and keeps only the first inline answer, so it is not used.
Django-free, like ``gateway.mail``.
"""

from __future__ import annotations

import re

from mailparser_reply.constants import GENERIC_MAIL_SEPARATOR, MAIL_LANGUAGES

REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "cs"]


def _patterns(key: str) -> str:
    return "|".join(
        f"(?:{MAIL_LANGUAGES[language][key]})" for language in REPLY_LANGUAGES if MAIL_LANGUAGES[language].get(key)
    )


WROTE = re.compile(_patterns("wrote_header"), re.MULTILINE | re.IGNORECASE)
HISTORY = re.compile(
    rf"{_patterns('from_header')}|(?:{GENERIC_MAIL_SEPARATOR})|^_{{32,}}$", re.MULTILINE | re.IGNORECASE
)
HISTORY_START = re.compile(r"^(?:[* ]*\w[\w ]{0,24}:|-{5,}|_{32,})", re.MULTILINE)  # cheap: where HISTORY may begin
SENT_FROM = re.compile(rf"^(?:{_patterns('sent_from')}|Von meinem \w+ gesendet)\b.*$", re.IGNORECASE)
FORWARD_MARKER = re.compile(
    r"^(?:> ?)*(?:-{3,} ?(?:Forwarded message|Forwarded Message|Weitergeleitete Nachricht|Message transféré|"
    r"Mensaje reenviado|Messaggio inoltrato|Doorgestuurd bericht) ?-*|Begin forwarded message:|"
    r"Anfang der weitergeleiteten Nachricht:)\s*$",
    re.MULTILINE | re.IGNORECASE,
)
ATTRIBUTION_LENGTH = 500  # longer is no "On … wrote:" line (and the patterns are quadratic in the length)
RULE = re.compile(r"\* \* \*|-{3,}|_{3,}")  # a horizontal rule (html2text writes <hr> as * * *)
SIGNATURE_DELIMITER = re.compile(r"^--\s*$", re.MULTILINE)


def new_text(text: str, forward: bool = False) -> str:
    """The text the sender wrote (and, in a forward, the forwarded text); the whole text when stripping
    would leave nothing."""
    marker = FORWARD_MARKER.search(text)
    own, forwarded = (text[: marker.start()], text[marker.start() :]) if marker else (text, "")
    own = without_signature(without_history(own, keep_top_posted=forward or bool(marker)))
    kept = _trimmed("\n\n".join(part for part in (own, forwarded) if part.strip()))
    return kept or _trimmed(text)


def without_history(text: str, keep_top_posted: bool = False) -> str:
    """``text`` without its trailing quoted history and (unless kept) a top-posted one."""
    lines = text.split("\n")
    end = len(lines)
    while end and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith(">")):
        end -= 1
    if any(line.lstrip().startswith(">") for line in lines[end:]):  # a quoted block ends the mail
        for span in (1, 2, 3):  # the attribution line, which clients wrap (a long name and address)
            attribution = " ".join(line.strip() for line in lines[max(end - span, 0) : end])
            if end - span >= 0 and len(attribution) <= ATTRIBUTION_LENGTH and WROTE.fullmatch(attribution):
                end -= span
                break
        lines = lines[:end]
    text = "\n".join(lines)
    if not keep_top_posted:
        start = top_posted_history(text)
        if start is not None and text[:start].strip():
            text = without_rules_at_end(text[:start])
    return text


def top_posted_history(text: str) -> int | None:
    """Where a history that starts with a header block or separator line begins, or None. The patterns
    are tried only where a line could start one (they are slow to try everywhere)."""
    for candidate in HISTORY_START.finditer(text):
        if HISTORY.match(text, candidate.start()):
            return candidate.start()
    return None


def without_rules_at_end(text: str) -> str:
    """``text`` without the blank lines and horizontal rules that separated it from a history."""
    lines = text.split("\n")
    while lines and (not lines[-1].strip() or RULE.fullmatch(lines[-1].strip())):
        lines.pop()
    return "\n".join(lines)


def without_signature(text: str) -> str:
    """``text`` without the signature after the last ``-- `` line and a trailing "Sent from my …" line;
    a text that is only a signature keeps it (without the delimiter)."""
    delimiters = list(SIGNATURE_DELIMITER.finditer(text))
    if delimiters:
        last = delimiters[-1]
        before, signature = text[: last.start()], text[last.end() :]
        text = before if before.strip() else signature
    lines = _trimmed(text).split("\n")
    if len(lines) > 1 and SENT_FROM.match(lines[-1].strip()):
        lines.pop()
    return "\n".join(lines)


def _trimmed(text: str) -> str:
    """Blank lines at both ends removed and runs of them made one, the first line's indentation kept."""
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"\A(?:[ \t]*\n)+", "", text)).rstrip()
