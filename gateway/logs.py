"""Log lines that outside input cannot forge.

A topic, a mail header or a presence name may carry a newline, a carriage return or a terminal escape;
written as it is, it would start a log line of its own that looks like the gateway's. This formatter
escapes every control character in a record's message (``\\n`` becomes the two characters ``\\n``), and
indents every further line of a traceback, whose exception text may quote such input too: each record
is then exactly one line that starts with its time stamp, followed only by indented lines.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (which some viewers break on).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
INDENT = "    "


def escape_controls(text: str) -> str:
    """``text`` with each control character written as a Python escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def indent_lines(text: str) -> str:
    """Every line but the first indented, and control characters within a line escaped."""
    return f"\n{INDENT}".join(escape_controls(line) for line in text.split("\n"))


class SafeFormatter(logging.Formatter):
    """``logging.Formatter`` whose records are one line each, with tracebacks indented under them."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return INDENT + indent_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return INDENT + indent_lines(super().formatStack(stack_info))
