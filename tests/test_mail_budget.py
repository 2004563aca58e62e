"""Over real SMTP: a hostile mail costs only itself. It gets a permanent 5xx (never a 451 for its own
fault), the event loop keeps answering while it is read, and every good mail around it is posted."""

from __future__ import annotations

import asyncio
import smtplib
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile_mail
from tests.support import ahttp, fresh_database, history, http_json, launch_gateway, unique
from tests.test_parsers_property import mails as odd_mails

BUDGET = 1.0  # MAIL_PARSE_TIMEOUT here: a hostile parse is stopped after a second
PROBE_LIMIT = 0.5  # seconds a health probe may take while a mail is being read


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mosquitto):
    """One mail per sender and room (each test mails from fresh senders), a one-second parse budget."""
    gateway = launch_gateway(
        tmp_path_factory.mktemp("mail-budget"), mosquitto, MAIL_SENDER_RATE=0.01, MAIL_PARSE_TIMEOUT=BUDGET
    )
    yield gateway
    code = gateway.process.stop()
    assert code == 0, f"rungateway exited {code} on SIGTERM:\n{gateway.process.output}"


@pytest.fixture(scope="module")
def postgres_gateway(tmp_path_factory, mosquitto, postgres_host):
    """The same on PostgreSQL, which refuses what SQLite lets by (text with NUL, keys over 300 characters)."""
    with fresh_database("gw_mail") as url:
        gateway = launch_gateway(tmp_path_factory.mktemp("mail-pg"), mosquitto, DATABASE_URL=url, MAIL_SENDER_RATE=0.01)
        yield gateway
        assert gateway.process.stop() == 0, gateway.process.output


def send(port: int, room: str, content: bytes, *, sender: str | None = None, smtputf8: bool = False) -> tuple[int, str]:
    """The reply to DATA, as (code, text); 250 when accepted."""
    sender = sender or f"{uuid.uuid4().hex}@example.com"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        try:
            client.sendmail(sender, [f"{room}@localhost"], content, mail_options=["SMTPUTF8"] if smtputf8 else [])
        except smtplib.SMTPDataError as refused:
            return refused.smtp_code, refused.smtp_error.decode(errors="replace")
    return 250, ""


async def asend(port: int, room: str, content: bytes, **options) -> tuple[int, str]:
    return await asyncio.to_thread(send, port, room, content, **options)


def good_mail(subject: str) -> bytes:
    headers = f"From: Alice <alice@example.com>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n"
    return f"{headers}\r\nok\r\n".encode()


async def probed_while(gateway, sending) -> tuple[tuple[int, str], list[float]]:
    """Run ``sending`` and probe ``/healthz`` back to back until it is answered: its reply, the probes' times."""
    task = asyncio.ensure_future(sending)
    loop, times = asyncio.get_running_loop(), []
    while not task.done():
        start = loop.time()
        status, body = await ahttp("GET", f"{gateway.http}/healthz")
        times.append(loop.time() - start)
        assert status == 200, body
    return await task, times


@pytest.mark.parametrize(
    ("mail", "reason"),
    [
        (hostile_mail.nested_html(8000), f"took more than {BUDGET:g} s to read"),
        (hostile_mail.encoded_word_flood(5000), "encoded words"),
        (hostile_mail.folded_parameters(3000), "header field is longer than"),
        (hostile_mail.long_quoted_parameter(7600), "Content-* header field is longer than"),
    ],
    ids=["nested-html", "encoded-words", "folded-parameters", "quoted-parameter"],
)
async def test_the_loop_answers_while_a_hostile_mail_is_read(gateway, mail, reason):
    room = unique()
    (code, text), probes = await probed_while(gateway, asend(gateway.smtp_port, room, mail))
    assert code == 554 and text.startswith("5.6.0") and reason in text, (code, text)
    assert probes and max(probes) < PROBE_LIMIT, probes
    if "took more than" in reason:
        assert len(probes) >= 3, probes  # it really was being read for a while, and the loop answered
    assert await asend(gateway.smtp_port, room, good_mail(unique("after"))) == (250, "")
    assert len(await history(gateway, room)) == 1
    gateway.process.wait_for(f"for room {room} refused: ")


async def test_a_good_mail_is_not_held_up_by_a_slow_one(gateway):
    room = unique()
    slow = asyncio.ensure_future(asend(gateway.smtp_port, room, hostile_mail.nested_html(8000)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asend(gateway.smtp_port, room, good_mail(unique("quick"))) == (250, "")
    assert loop.time() - start < BUDGET  # a second worker read it
    assert (await slow)[0] == 554


hostile_mails = st.one_of(
    st.integers(900, 2000).map(hostile_mail.nested_html),
    st.integers(301, 3000).map(hostile_mail.encoded_word_flood),
    st.integers(300, 2000).map(hostile_mail.folded_parameters),
    st.integers(2400, 7600).map(hostile_mail.long_quoted_parameter),
    st.integers(501, 2000).map(hostile_mail.many_headers),
    st.integers(101, 400).map(hostile_mail.many_parts),
    st.integers(11, 100).map(hostile_mail.deep_mime),
    st.text(min_size=1, max_size=300).map(
        lambda mid: f"From: a@example.com\r\nSubject: odd id\r\nMessage-ID: <{mid}>\r\n\r\nx\r\n".encode(
            "utf-8", "surrogateescape"
        )
    ),
    odd_mails,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_mails, min_size=1, max_size=3))
def test_hostile_mails_get_a_clear_answer_and_good_ones_arrive(gateway, hostile):
    room = unique()
    goods = []
    for mail in hostile:
        code, text = send(gateway.smtp_port, room, mail)
        assert code == 250 or 500 <= code < 600, (code, text)  # never a 4xx: the sender would retry it for ever
        assert code == 250 or text, code
        goods.append(unique("good"))
        assert send(gateway.smtp_port, room, good_mail(goods[-1])) == (250, "")
    status, body = http_json("GET", f"{gateway.http}/api/rooms/{room}/messages?limit=1000")
    assert status == 200, body
    posted = [message["message"] for message in body["messages"]]
    assert [text for text in posted if text.startswith("good")] == [f"{good}\n\nok" for good in goods]
    assert "Traceback" not in gateway.process.output


@pytest.mark.parametrize(
    ("message_id", "smtputf8"),
    [
        ("<caf\u00e9-\u00fc@ex\u00e4mple.com>".encode(), True),
        (b"<raw\xe9\xff@example.com>", False),
        (b"<" + b"long" * 100 + b"@example.com>", False),
    ],
    ids=["smtputf8", "raw-8-bit", "over-long"],
)
@pytest.mark.parametrize("database", ["gateway", "postgres_gateway"])
async def test_an_odd_message_id_posts_once(request, database, message_id, smtputf8):
    gateway = request.getfixturevalue(database)
    room = unique()
    mail = b"From: b\xc3\xa9a@example.com\r\nSubject: caf\xc3\xa9\r\nMessage-ID: " + message_id + b"\r\n\r\nbody\r\n"
    for _ in range(2):  # the sending server retries after a lost 250 (from another of its addresses)
        assert await asend(gateway.smtp_port, room, mail, smtputf8=smtputf8) == (250, "")
    assert [m["message"] for m in await history(gateway, room)] == ["caf\u00e9\n\nbody"]


async def test_the_sender_rate_is_checked_before_reading(gateway):
    room, sender = unique(), f"{unique('busy')}@example.com"
    assert await asend(gateway.smtp_port, room, good_mail(unique("first")), sender=sender) == (250, "")
    loop = asyncio.get_running_loop()
    for mail in (hostile_mail.nested_html(8000), hostile_mail.encoded_word_flood(5000)):
        start = loop.time()
        code, text = await asend(gateway.smtp_port, room, mail, sender=sender)
        assert (code, text[:5]) == (451, "4.7.1"), text  # not a 554: neither parsed nor scanned
        assert loop.time() - start < BUDGET / 2


async def test_health_and_metrics_show_the_mail_readers(gateway):
    room = unique()
    assert (await asend(gateway.smtp_port, room, hostile_mail.nested_html(8000)))[0] == 554
    assert (await asend(gateway.smtp_port, room, hostile_mail.many_parts(500)))[0] == 554
    status, body = await ahttp("GET", f"{gateway.http}/healthz")
    assert status == 200 and body["components"]["mail_readers"] == {"ok": True, "detail": "running"}, body
    status, text = await ahttp("GET", f"{gateway.http}/metrics")
    assert status == 200
    for reason in ("budget", "cap"):
        [line] = [
            line for line in text.splitlines() if line.startswith(f'gateway_mail_refusals_total{{reason="{reason}"}}')
        ]
        assert float(line.split()[-1]) >= 1, line


async def test_a_slow_mail_to_many_rooms_is_read_once(gateway):
    """Six recipients, two workers: read six times it would take three budgets, and more recipients
    would keep every worker busy; read once, it takes one."""
    rooms = [unique() for _ in range(6)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    refused = await asyncio.to_thread(
        smtp_refusal, gateway.smtp_port, [f"{room}@localhost" for room in rooms], hostile_mail.nested_html(8000)
    )
    assert refused[0] == 554 and b"took more than" in refused[1], refused
    assert loop.time() - start < 2.5 * BUDGET


def smtp_refusal(port: int, recipients: list[str], content: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(f"{uuid.uuid4().hex}@example.com", recipients, content)
    return refused.value.smtp_code, refused.value.smtp_error


async def test_what_a_mail_says_cannot_forge_a_log_line(gateway):
    room, forged = unique(), "2026-12-05 00:00:00,000 CRITICAL forged: line"
    auto = f"From: a@example.com\r\nSubject: s\r\nAuto-Submitted: auto-replied\r\n {forged}\r\n\r\nbody\r\n".encode()
    assert await asend(gateway.smtp_port, room, auto) == (250, "")  # auto-generated: accepted, not posted
    bad = hostile_mail.many_parts(500).replace(b"Subject: hostile", f"Subject: x\r\n {forged}".encode())
    assert (await asend(gateway.smtp_port, room, bad, sender=f"x\x1b[2J{unique()}@example.com"))[0] == 554
    gateway.process.wait_for(f"Auto-generated mail for room {room} not posted")
    gateway.process.wait_for(f"for room {room} refused: ")
    assert not [
        line for line in gateway.process.lines if line.lstrip().lower().startswith(forged.lower()) or "\x1b" in line
    ]
