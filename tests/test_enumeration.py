"""To an outsider a members-only room looks exactly like a missing one, over the API, the event stream,
the room page and SMTP; refused recipients are limited per session and per client address (issue 13)."""

from __future__ import annotations

import contextlib
import http.client
import smtplib
import time
from collections.abc import Iterator

import pytest

from tests.members import closed_gateway, cookie_header, log_in, request
from tests.support import build_mail, unique


@pytest.fixture(scope="module")
def closed(tmp_path_factory, mosquitto):
    # Per session only here: the limit per address has its own gateway below.
    gateway = closed_gateway(tmp_path_factory.mktemp("enumeration"), mosquitto, SMTP_REFUSED_RECIPIENT_RATE=0)
    yield gateway
    assert gateway.process.stop() == 0


def answers(gateway, method: str, path: str, **headers: str) -> dict[str, tuple]:
    """The answer for ``team`` (members-only) and for a room that does not exist, names taken out."""
    missing = unique("missing")
    found = {}
    for room in ("team", missing):
        status, body = request(gateway, method, path.format(room=room), b"{}" if method == "POST" else None, **headers)
        found[room] = (status, str(body).replace(room, "ROOM"))
    return {"members-only": found["team"], "missing": found[missing]}


@pytest.mark.parametrize("who", ["anonymous", "a bad token", "mallory's token", "mallory's session"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/rooms/{room}/messages"),
        ("POST", "/api/rooms/{room}/messages"),
        ("GET", "/api/rooms/{room}/events"),
    ],
)
def test_the_api_answers_outsiders_alike(closed, who, method, path):
    headers = {
        "anonymous": {},
        "a bad token": {"Authorization": "Bearer made-up"},
        "mallory's token": {"Authorization": "Bearer mallory-token"},
        "mallory's session": {"Cookie": cookie_header(log_in(closed, "mallory", "pw-mallory"))},
    }[who]
    seen = answers(closed, method, path, **headers)
    assert seen["members-only"] == seen["missing"] == (404, "{'type': 'error', 'error': 'no such room'}")
    # A member gets the real answer (only the status is read: the event stream stays open).
    member = http.client.HTTPConnection("127.0.0.1", closed.http_port, timeout=10)
    member.request("GET", path.format(room="team"), headers={"Authorization": "Bearer alice-token"})
    assert member.getresponse().status == 200
    member.close()


def test_the_room_page_answers_outsiders_alike(closed):
    anonymous = answers(closed, "GET", "/chat/{room}/")
    assert anonymous["members-only"] == anonymous["missing"] == (302, "/accounts/login/?next=/chat/ROOM/")
    mallory = answers(closed, "GET", "/chat/{room}/", Cookie=cookie_header(log_in(closed, "mallory", "pw-mallory")))
    assert mallory["members-only"] == mallory["missing"] and mallory["missing"][0] == 404
    alice = cookie_header(log_in(closed, "alice", "pw-alice"))
    assert request(closed, "GET", "/chat/team/", Cookie=alice)[0] == 200


@contextlib.contextmanager
def session(gateway) -> Iterator[smtplib.SMTP]:
    """An SMTP session from boss@example.com, up to its RCPTs."""
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
        client.ehlo()
        client.mail("boss@example.com")
        yield client


def rcpt(client: smtplib.SMTP, address: str) -> tuple[int, bytes]:
    code, reply = client.rcpt(address)
    return code, reply


def test_smtp_answers_a_closed_room_as_a_missing_one(closed):
    """``team`` takes mail only at its secret address: its plain one, and a wrong secret, are unknown."""
    with session(closed) as client:
        missing = rcpt(client, f"{unique('missing')}@localhost")
        assert missing == (550, b"5.1.1 No such recipient here")
        assert rcpt(client, "team@localhost") == missing
        assert rcpt(client, "team.wrong@localhost") == missing
        assert rcpt(client, "team.s3cr3t@localhost")[0] == 250


def test_refused_recipients_end_the_session_after_the_limit(closed):
    with session(closed) as client:
        for _ in range(5):  # SMTP_MAX_REFUSED_RECIPIENTS
            assert rcpt(client, f"{unique('probe')}@localhost")[0] == 550
        # Then every recipient, a real one too, gets 421 and the session ends.
        assert rcpt(client, "team.s3cr3t@localhost") == (
            421,
            b"4.7.0 Too many refused recipients in this session, closing",
        )
        assert client.sock.recv(1) == b""  # closed by the server
    with session(closed) as client:  # a new session starts afresh
        assert rcpt(client, "team.s3cr3t@localhost")[0] == 250


@pytest.fixture
def per_address(tmp_path, mosquitto):
    gateway = closed_gateway(
        tmp_path, mosquitto, SMTP_REFUSED_RECIPIENT_RATE=1, SMTP_REFUSED_RECIPIENT_BURST=10, MAIL_SENDER_RATE=100
    )
    yield gateway
    assert gateway.process.stop() == 0


def test_refused_recipients_are_limited_per_client_address_across_sessions(per_address):
    """What took 1,000 probes in 1.4 s: reconnecting after each 421 gets no more than the burst and
    the rate's worth of real answers, and meanwhile a real address gets 421 as well."""
    real_answers, limited_by_address, probes, start = 0, 0, 0, time.monotonic()
    while probes < 200:
        with session(per_address) as client:
            while probes < 200:
                probes += 1
                code, reply = rcpt(client, f"{unique('probe')}@localhost")
                if code != 550:  # 421: the session's limit (5) or the address's (a burst of 10, then 1 a second)
                    assert code == 421 and reply.startswith(b"4.7.0 Too many refused recipients"), (code, reply)
                    limited_by_address += reply.endswith(b"from your address, try again later")
                    break
                real_answers += 1
    elapsed = time.monotonic() - start
    assert real_answers <= 10 + elapsed * 1 + 1, (real_answers, elapsed)
    assert limited_by_address > 0
    with session(per_address) as client:
        assert rcpt(client, "team.s3cr3t@localhost")[0] == 421
    assert eventually_accepted(per_address, "team.s3cr3t@localhost", timeout=10)  # after a wait, at the rate


def eventually_accepted(gateway, address: str, timeout: float) -> bool:
    """A mail to ``address`` is taken within ``timeout`` seconds (the limit refills at its rate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session(gateway) as client:
            if rcpt(client, address)[0] == 250:
                client.data(build_mail("team", "after waiting", sender="boss@example.com"))
                return True
        time.sleep(0.2)  # polling the refill (the clock is what is waited for), not synchronisation
    return False
