"""Posts made with the session cookie must come from the gateway's own pages (Origin: scheme, host and
port) or carry Django's CSRF token; API clients without the cookie post as before (issue 13). Over real
sockets, and in headless Chromium with the attacking page on another port of the same host."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading

import pytest
from playwright.sync_api import expect

from tests.members import closed_gateway, cookie_header, log_in, messages, request
from tests.support import ROOT, manage, unique

FOREIGN = "a post with the session cookie must come from the gateway's own pages"
TRUSTED = "https://app.example.com:8443"


@pytest.fixture(scope="module")
def closed(tmp_path_factory, mosquitto):
    gateway = closed_gateway(tmp_path_factory.mktemp("cross-site"), mosquitto, CSRF_TRUSTED_ORIGINS=TRUSTED)
    yield gateway
    assert gateway.process.stop() == 0


@pytest.fixture(scope="module")
def alice(closed) -> dict[str, str]:
    return log_in(closed, "alice", "pw-alice")


def post(gateway, text: str, room: str = "team", content_type: str = "application/json", **headers: str):
    body = json.dumps({"message": text}).encode()
    return request(gateway, "POST", f"/api/rooms/{room}/messages", body, **{"Content-Type": content_type, **headers})


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{other}",  # another port of the same host: the same site, another origin
        "https://127.0.0.1:{port}",  # another scheme
        "http://localhost:{port}",  # another host
        "http://evil.example",
        "null",  # a sandboxed frame, a redirect
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_a_session_post_from_another_origin_is_refused(closed, alice, origin, content_type):
    text = unique("forged")
    origin = origin.format(port=closed.http_port, other=closed.http_port + 1)
    status, body = post(closed, text, content_type=content_type, Cookie=cookie_header(alice), Origin=origin)
    assert status == 403 and FOREIGN in body["error"], body
    assert text not in messages(closed, "team")


def test_a_session_post_from_the_gateways_own_origin_or_a_trusted_one_is_taken(closed, alice):
    for origin in (f"http://127.0.0.1:{closed.http_port}", TRUSTED):
        text = unique("own")
        status, body = post(closed, text, Cookie=cookie_header(alice), Origin=origin)
        assert status == 201 and body["sender"] != "", body
        assert text in messages(closed, "team")


def test_without_origin_a_session_post_needs_the_csrf_token(closed, alice):
    cookie = cookie_header(alice)
    for headers in ({}, {"X-CSRFToken": "x" * 32}, {"X-CSRFToken": alice["csrftoken"][::-1]}):
        text = unique("no-token")
        status, body = post(closed, text, Cookie=cookie, **headers)
        assert status == 403 and FOREIGN in body["error"], (headers, body)
        assert text not in messages(closed, "team")
    text = unique("token")
    assert post(closed, text, Cookie=cookie, **{"X-CSRFToken": alice["csrftoken"]})[0] == 201
    assert text in messages(closed, "team")


def test_posts_without_the_session_cookie_are_unchanged(closed):
    """Bearer tokens and anonymous posts into public rooms carry no ambient authority: any origin."""
    bearer = unique("bearer")
    assert post(closed, bearer, Authorization="Bearer alice-token", Origin="http://evil.example")[0] == 201
    anonymous = unique("anonymous")
    assert post(closed, anonymous, room="open-room", Origin="http://evil.example")[0] == 201
    assert bearer in messages(closed, "team") and anonymous in messages(closed, "open-room")


def test_the_event_stream_checks_the_host(closed):
    """As the messages endpoint does: a name outside ALLOWED_HOSTS gets 400, not the room's stream."""
    assert events_head(closed, "evil.example").startswith(b"HTTP/1.1 400")
    assert events_head(closed, f"127.0.0.1:{closed.http_port}").startswith(b"HTTP/1.1 200")


def events_head(gateway, host: str) -> bytes:
    """The status line of ``GET /api/rooms/open-room/events`` sent with this ``Host``."""
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as connection:
        connection.sendall(f"GET /api/rooms/open-room/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return connection.recv(200)


# In Chromium: the session cookie is SameSite=Lax, and a page on another port of 127.0.0.1 is the same
# site, so the browser does send it. Only the gateway's check stands between that page and the room.

ATTACK = """<!doctype html><title>waiting</title><script>
fetch("{url}", {{method: "POST", credentials: "include", mode: "no-cors", body: JSON.stringify({{message: "{text}"}})}})
  .finally(() => {{ document.title = "done"; }});
</script>"""


@pytest.fixture
def attacker():
    """A page of someone else's on another port of 127.0.0.1: ``attacker(html)`` serves it, returns its URL."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path, b"")
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(html: str) -> str:
        path = f"/{unique('page')}.html"
        pages[path] = html.encode()
        return f"http://127.0.0.1:{server.server_address[1]}{path}"

    yield serve
    server.shutdown()
    server.server_close()


def test_in_chromium_a_page_on_another_port_cannot_post_as_the_member(browser, closed, attacker):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{closed.http}/accounts/login/?next=/chat/team/")
    page.locator("input[name=username]").fill("alice")
    page.locator("input[name=password]").fill("pw-alice")
    page.locator("input[name=password]").press("Enter")
    expect(page).to_have_url(f"{closed.http}/chat/team/")

    forged, refusals = unique("forged"), closed.process.count("from another origin")
    page.goto(attacker(ATTACK.format(url=f"{closed.http}/api/rooms/team/messages", text=forged)))
    expect(page).to_have_title("done")
    # The browser sent alice's cookie (else the room would look missing, with no such line), and was refused.
    closed.process.wait_for("from another origin", count=refusals + 1)
    assert forged not in messages(closed, "team")

    page.goto(f"{closed.http}/chat/team/")  # the same fetch from the gateway's own page is taken
    own = unique("own")
    status = page.evaluate(
        """async text => (await fetch("/api/rooms/team/messages", {method: "POST", credentials: "include",
               headers: {"Content-Type": "application/json"}, body: JSON.stringify({message: text})})).status""",
        own,
    )
    assert status == 201 and own in messages(closed, "team")
    context.close()


SESSION = """
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
user = User.objects.get(username="alice")
session = import_module(settings.SESSION_ENGINE).SessionStore()
session.update({SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: settings.AUTHENTICATION_BACKENDS[-1]})
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""


@pytest.fixture
def behind_tls(tmp_path, mosquitto):
    """A gateway behind a TLS proxy (``BEHIND_TLS_PROXY``: ``X-Forwarded-Proto`` says the scheme), and
    alice's session made directly (its cookie is ``Secure``: no client keeps it from plain HTTP)."""
    gateway = closed_gateway(tmp_path, mosquitto, BEHIND_TLS_PROXY="true")
    made = subprocess.run(manage("shell", "-c", SESSION), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    yield gateway, made.stdout.decode().split()[-1]
    assert gateway.process.stop() == 0


def test_behind_a_tls_proxy_the_origin_must_be_https(behind_tls):
    gateway, session = behind_tls
    cookie, proxied = f"sessionid={session}", {"X-Forwarded-Proto": "https"}
    plain = unique("plain")
    status, body = post(gateway, plain, Cookie=cookie, Origin=f"http://127.0.0.1:{gateway.http_port}", **proxied)
    assert status == 403 and FOREIGN in body["error"], body
    secure = unique("secure")
    assert post(gateway, secure, Cookie=cookie, Origin=f"https://127.0.0.1:{gateway.http_port}", **proxied)[0] == 201
    assert secure in messages(gateway, "team") and plain not in messages(gateway, "team")
