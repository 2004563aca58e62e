"""gateway/validation.py: the one validator every way in uses; and the MQTT payload parser that uses it."""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import validation
from gateway.payloads import parse_payload
from gateway.rooms import InvalidMessage, validate

DEPTH = 32  # DATA_MAX_DEPTH's default


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff ok", "\udc80"])  # noqa: PT014 (ruff sees lone surrogates as one)
def test_lone_surrogates_in_text_or_sender_are_refused(text):
    with pytest.raises(InvalidMessage, match="lone surrogate"):
        validate("lobby", text, None, "http")
    with pytest.raises(InvalidMessage, match="lone surrogate"):
        validate("lobby", "fine", text, "http")


def test_control_characters_are_replaced_in_text_and_sender():
    text, sender = validate("lobby", "a\x00b\x1bc\td\ne\r\x7f", " bob\x00\n\tsmith\x9b! ", "http")
    assert text == "a\ufffdb\ufffdc\td\ne\r\ufffd"  # tab and line breaks kept in text
    assert sender == "bob\ufffd\ufffd\ufffdsmith\ufffd!"  # a sender is one line


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None, 5, ["x"], {"a": 1}, True])
def test_text_must_be_non_empty_text(text):
    with pytest.raises(InvalidMessage, match="'message' must be non-empty text"):
        validate("lobby", text, None, "http")


@pytest.mark.parametrize("sender", [5, 0.5, True, ["x"], {"a": 1}])
def test_a_sender_that_is_not_text_is_refused_not_stringified(sender):
    with pytest.raises(InvalidMessage, match="'sender' must be text"):
        validate("lobby", "hi", sender, "http")


def test_a_missing_or_blank_sender_is_the_default_and_a_long_one_is_cut():
    assert validate("lobby", "hi", None, "http")[1] == "anonymous"
    assert validate("lobby", "hi", "  ", "http")[1] == "anonymous"
    assert validate("lobby", "hi", "x" * 500, "http")[1] == "x" * 200


def test_data_numbers_must_be_finite():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidMessage, match="finite"):
            validation.check_data({"reading": {"values": [1, bad]}})


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        ({"a\x00": 1}, "NUL"),
        ({"a": "x\x00"}, "NUL"),
        ({"\ud800": 1}, "lone surrogate"),
        ({"a": ["\udfff"]}, "lone surrogate"),
        ({"a": b"bytes"}, "only JSON values"),
        ({"a": {1, 2}}, "only JSON values"),
        ([1], "must be a JSON object"),
    ],
)
def test_data_that_cannot_be_stored_as_it_is_is_refused_whole(data, refusal):
    with pytest.raises(InvalidMessage, match=refusal):
        validation.check_data(data)


def test_data_depth_and_size_are_bounded(settings):
    within = json.loads(nested(DEPTH))
    assert validation.check_data(within) == within
    with pytest.raises(InvalidMessage, match=f"nested deeper than {DEPTH}"):
        validation.check_data(json.loads(nested(DEPTH + 1)))
    settings.DATA_MAX_BYTES = 100
    assert validation.check_data({"a": "x" * 90})
    with pytest.raises(InvalidMessage, match="over 100"):
        validation.check_data({"a": "é" * 50})  # bytes, not characters


def test_data_of_any_depth_is_refused_without_recursing():
    deep: dict = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(InvalidMessage, match="nested deeper"):
        validation.check_data(deep)


@pytest.mark.parametrize("depth", [DEPTH + 1, 999, 2_000, 100_000])
def test_deep_json_is_refused_quickly(depth):
    started = time.monotonic()
    with pytest.raises(InvalidMessage, match="nested deeper than"):
        validation.parse_json(nested(depth))
    with pytest.raises(InvalidMessage, match="nested deeper than"):
        validation.parse_json("[" * depth + "]" * depth)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("document", ['{"message": NaN}', '{"a": [Infinity]}', "-Infinity"])
def test_nan_and_infinity_are_not_json(document):
    with pytest.raises(InvalidMessage, match="not JSON"):
        validation.parse_json(document)


def test_parse_json_answers_plain_errors_as_value_errors():
    assert validation.parse_json(nested(DEPTH, '"x"'))
    for broken in ("{", b"\xff", ""):
        with pytest.raises(ValueError) as raised:  # noqa: PT011 (any message: the class is what is asserted)
            validation.parse_json(broken)
        assert not isinstance(raised.value, InvalidMessage)


def test_keys_are_kept_when_short_printable_ascii_and_hashed_otherwise():
    assert validation.safe_key(None) is None
    assert validation.safe_key("email:<abc@example.com>") == "email:<abc@example.com>"
    assert validation.safe_key(17) == "17"
    for unsafe in ("email:<ü@example.com>", "email:<\udcff@x>", "a\x00b", "k" * 301, "line\nbreak"):
        key = validation.safe_key(unsafe)
        assert key.startswith("sha256:") and len(key) == 71 and key == validation.safe_key(unsafe)
    assert validation.safe_key("k" * 301) != validation.safe_key("k" * 302)  # never cut short into one


def test_a_display_name_is_never_refused():
    assert validation.clean_name("ann\x00\ud800\n") == "ann\ufffd\ufffd"
    assert validation.clean_name(None) == "anonymous" and validation.clean_name("  ") == "anonymous"
    assert validation.clean_name("z" * 300) == "z" * 200


@pytest.mark.parametrize(
    ("payload", "refusal"),
    [
        (b'{"message": "x", "sender": 5}', "'sender' must be text"),
        (b'{"message": "x", "sender": ["a"]}', "'sender' must be text"),
        (b'{"temperature": NaN}', "not JSON"),
        (b'{"temperature": 1e400}', "finite"),
        (b'{"message": "\\ud800"}', "lone surrogate"),
        (b'{"t": "\\udfff"}', "lone surrogate"),
        (b'{"sender": "\\ud800", "t": 1}', "lone surrogate"),
        (nested(5_000).encode(), "nested deeper"),
        (b"[" * 5_000, "nested deeper"),
        (b'{"t\\u0000": 1}', "NUL"),
        (b'{"message": "x", "id": true}', "'id' must be"),
    ],
)
def test_mqtt_payloads_the_consumer_does_not_expect_are_refused_where_they_come_in(payload, refusal):
    with pytest.raises(InvalidMessage, match=refusal):
        parse_payload(payload)


def test_mqtt_payloads_come_out_clean():
    post = parse_payload('{"message": "a\\u0000b", "sender": "dev\\nice", "id": "ü"}'.encode())
    assert (post.text, post.sender) == ("a\ufffdb", "dev\ufffdice") and post.key.startswith("sha256:")
    assert parse_payload(b"plain \x1b[31m red").text == "plain \ufffd[31m red"
    assert parse_payload(b"[alarm] door open").text == "[alarm] door open"


json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["message", "sender", "id", "t", "v"]), json_values, max_size=4),
    st.integers(0, 3),
)
def test_whatever_a_device_sends_the_post_is_storable_or_refused(document, wrap):
    """Property: anything that comes out of the parser encodes as UTF-8 and strict JSON, within the bounds."""
    for _ in range(wrap):
        document = {"t": document}
    payload = json.dumps(document).encode()  # ensure_ascii: lone surrogates travel as escapes
    try:
        post = parse_payload(payload)
        text, sender = validate("lobby", post.text, post.sender, "mqtt")
    except InvalidMessage as refusal:
        assert str(refusal)
        return
    text.encode(), sender.encode(), (post.key or "").encode()
    assert "\x00" not in text + sender
    if post.data is not None:
        json.dumps(post.data, allow_nan=False, ensure_ascii=False).encode()
