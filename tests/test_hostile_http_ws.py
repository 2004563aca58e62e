"""Property: over HTTP and over WebSocket, any hostile post gets its clear answer at once (400 with an
error object; an error frame, the socket staying open), or is stored cleaned, and every good post that
follows it arrives: in the history, and live on a reader's open WebSocket."""

from __future__ import annotations

import json
import string
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.support import asmtp, history, http_json, unique

MESSAGE_MAX_LENGTH = 4000
DEPTH = 32  # DATA_MAX_DEPTH's default


class Case(NamedTuple):
    document: str  # the JSON text sent
    stored: tuple[str, str] | None  # (message, sender) as stored when it is cleaned, None when it is refused


def refused(document: str) -> Case:
    return Case(document, None)


def nested(depth: int, open_: str, leaf: str, close: str) -> str:
    return open_ * depth + leaf + close * depth


words = st.text(string.ascii_letters + " ", min_size=1, max_size=20)
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
controls = st.lists(st.sampled_from([chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\x7f"]), min_size=1)
not_text = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def control_text(word: str, chars: list[str]) -> Case:
    return Case(json.dumps({"message": f"x{''.join(chars)}{word}"}), (f"x{REPLACED * len(chars)}{word}", "anonymous"))


def control_sender(chars: list[str]) -> Case:
    """A sender is one line: its control characters and line breaks are each shown as U+FFFD."""
    sender = f"a{''.join(chars)}\n\tb"
    return Case(json.dumps({"message": "hi", "sender": sender}), ("hi", f"a{REPLACED * (len(chars) + 2)}b"))


def deep_beside(depth: int) -> Case:
    return refused('{"message": "x", "n": ' + nested(depth, '{"a":', "1", "}") + "}")


REPLACED = "\ufffd"
cases = st.one_of(
    # Lone surrogates: valid JSON, not text.
    st.builds(lambda w, s: refused(json.dumps({"message": f"{w}{s}{w}"})), words, surrogates),
    st.builds(lambda w, s: refused(json.dumps({"message": w, "sender": f"x{s}"})), words, surrogates),
    # NUL and other control characters: stored as U+FFFD.
    st.builds(control_text, words, controls),
    st.builds(control_sender, controls),
    # NaN and Infinity: not JSON, wherever they are.
    st.sampled_from(
        ['{"message": NaN}', '{"message": "x", "sender": Infinity}', '{"message": "x", "n": -Infinity}']
    ).map(refused),
    # Deep nesting, parseable or not, in the message, beside it or as the whole document.
    st.builds(lambda d: refused('{"message": ' + nested(d, "[", "", "]") + "}"), st.integers(DEPTH, 5_000)),
    st.builds(deep_beside, st.integers(DEPTH, 5_000)),
    st.builds(lambda d: refused(nested(d, "[", "", "]")), st.integers(DEPTH + 1, 5_000)),
    # Too long; wrong types for message and sender; not JSON at all.
    st.builds(lambda n: refused(json.dumps({"message": "y" * n})), st.integers(MESSAGE_MAX_LENGTH + 1, 30_000)),
    st.builds(lambda value: refused(json.dumps({"message": value})), st.none() | not_text),
    st.builds(lambda value: refused(json.dumps({"message": "x", "sender": value})), not_text),
    st.sampled_from(["{", "", "null", "[]", '{"message": "x"', "{'message': 'x'}", '{"sender": "no message"}']).map(
        refused
    ),
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def next_message(ws) -> dict:
    """The next message frame on ``ws`` (presence frames skipped)."""
    while (event := json.loads(ws.recv(10)))["type"] != "message":
        assert event["type"] == "presence", event
    return event


def assert_arrived(reader, gateway, room: str, expected: list[tuple[str, str]]) -> None:
    """Every expected message, in order, on the reader's WebSocket and in the room's history, once."""
    live = [next_message(reader) for _ in expected]
    assert [(event["message"], event["sender"]) for event in live] == expected
    status, body = http_json("GET", f"{gateway.http}/api/rooms/{room}/messages?limit=500")
    assert status == 200 and [(m["message"], m["sender"]) for m in body["messages"]] == expected


def test_any_hostile_http_post_is_answered_and_the_good_ones_after_it_arrive(gateway):
    room = unique("hostile-http")
    url = f"{gateway.http}/api/rooms/{room}/messages"
    expected: list[tuple[str, str]] = []
    with connect(gateway.ws(room), open_timeout=10) as reader:
        assert json.loads(reader.recv(10))["type"] == "history"

        @PROPERTY
        @given(case=cases, raw_bytes=st.booleans())
        def hostile_then_good(case: Case, raw_bytes: bool) -> None:
            body = case.document.encode()
            if raw_bytes and case.stored is None:
                body += b"\xff"  # and not even UTF-8
            status, answer = http_json("POST", url, raw=body)
            if case.stored is None:
                assert status == 400 and answer["type"] == "error" and answer["error"], (status, answer)
            else:
                assert status == 201 and (answer["message"], answer["sender"]) == case.stored, answer
                expected.append(case.stored)
            good = f"good {len(expected)}"
            status, answer = http_json("POST", url, {"message": good, "sender": "tester"})
            assert status == 201 and answer["message"] == good, answer
            expected.append((good, "tester"))

        hostile_then_good()
        assert_arrived(reader, gateway, room, expected)


def test_any_hostile_websocket_frame_is_answered_on_an_open_socket_and_the_good_ones_after_it_arrive(gateway):
    room = unique("hostile-ws")
    expected: list[tuple[str, str]] = []
    with connect(gateway.ws(room), open_timeout=10) as reader:
        assert json.loads(reader.recv(10))["type"] == "history"

        @PROPERTY
        @given(case=cases)
        def hostile_then_good(case: Case) -> None:
            with connect(gateway.ws(room), open_timeout=10, max_size=None) as ws:  # a sender's own rate limit
                assert json.loads(ws.recv(10))["type"] == "history"
                ws.send(case.document)
                if case.stored is None:
                    while (answer := json.loads(ws.recv(10)))["type"] == "presence":
                        pass
                    assert answer["type"] == "error" and answer["error"], answer
                else:
                    answer = next_message(ws)
                    assert (answer["message"], answer["sender"]) == case.stored, answer
                    expected.append(case.stored)
                good = f"good {len(expected)}"
                ws.send(json.dumps({"message": good, "sender": "tester"}))  # the same socket, still open
                assert next_message(ws)["message"] == good
                expected.append((good, "tester"))

        hostile_then_good()
        assert_arrived(reader, gateway, room, expected)


async def test_a_mail_with_a_non_ascii_message_id_is_posted_once(gateway):
    """Its key (a raw 8-bit byte, or UTF-8) is stored as a hash: posted, and a re-sent copy recognised."""
    room = unique("mail-id")
    for message_id in (b"<\xe9t\xe9@example.com>", "<ünï@example.com>".encode()):
        mail = b"From: a@example.com\r\nSubject: " + message_id + b"\r\nMessage-ID: " + message_id + b"\r\n\r\nhi\r\n"
        for _ in range(2):  # the sending server retrying
            assert await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], mail) == {}
    assert [m["message"] for m in await history(gateway, room)] == [
        "<été@example.com>\n\nhi",  # a raw 8-bit header is read as windows-1252 (docs/email.md)
        "<ünï@example.com>\n\nhi",
    ]
