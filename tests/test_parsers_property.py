"""Property tests of every parser at the edge: any input is a post or a clear refusal, never a crash."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail import UnreadableMail, mail_to_post
from gateway.payloads import parse_payload
from gateway.rooms import InvalidMessage, validate

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
payloads = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=2000).map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 50_000).map(lambda depth: b"{" * depth),
    st.integers(1, 50_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(1, 300_000).map(lambda size: json.dumps({"message": "x" * size}).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_mqtt_payload_is_a_post_or_a_refusal(payload):
    try:
        post = parse_payload(payload)
        text, sender = validate("lobby", post.text, post.sender, "mqtt")  # what the room service checks next
    except InvalidMessage as refusal:
        assert str(refusal)
    else:
        assert isinstance(text, str) and text.strip() and isinstance(sender, str)
        assert post.data is None or isinstance(post.data, dict)


header_names = st.sampled_from(
    ["Subject", "From", "Content-Type", "Content-Transfer-Encoding", "MIME-Version", "X-Junk"]
)
header_values = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "text/plain; charset=x-unknown",
            "text/html; charset=utf-7",
            "multipart/mixed; boundary=",
            "multipart/alternative; boundary=b",
            "base64",
            "quoted-printable",
            "=?utf-8?b?////?=",
            "=?bogus?q?x?=",
        ]
    ),
    st.integers(1, 20_000).map(lambda n: "x" * n),
)
mails = st.one_of(
    st.binary(max_size=3000),
    st.tuples(st.lists(st.tuples(header_names, header_values), max_size=8), st.binary(max_size=2000)).map(
        lambda parts: (
            "".join(f"{name}: {value}\r\n" for name, value in parts[0]).encode("utf-8", "surrogateescape")
            + b"\r\n"
            + parts[1]
        )
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mails)
def test_any_mail_is_a_post_or_a_refusal(content):
    try:
        post = mail_to_post(content, "a@example.com", "localhost")
        if not post.text:
            return  # nothing to post: the consumer refuses it
        validate("lobby", post.text, post.sender, "email")
    except (UnreadableMail, InvalidMessage) as refusal:
        assert str(refusal)
    else:
        assert post.text.strip() and isinstance(post.sender, str)
