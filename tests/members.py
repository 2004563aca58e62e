"""A gateway with closed rooms, users and tokens (the production access rules), and ways to talk to it as
a logged-in member, an API client or a stranger."""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import ROOT, Gateway, launch_gateway, manage

SETUP = """
from django.contrib.auth.models import User
from gateway.models import ApiToken, Room
alice = User.objects.create_user("alice", password="pw-alice")
mallory = User.objects.create_user("mallory", password="pw-mallory")
ApiToken.objects.create(user=alice, key="alice-token")
ApiToken.objects.create(user=mallory, key="mallory-token")
Room.objects.create(name="open-room", public=True, email_open=True, mqtt_open=True)
team = Room.objects.create(name="team", email_token="s3cr3t", email_allowlist="boss@example.com\\n@team.example")
team.members.add(alice)
"""


def closed_gateway(directory: Path, mqtt_url: str, **settings: Any) -> Gateway:
    """Rooms closed and made by hand, as in production: ``team`` (alice's, members-only, mail from its
    allowlist at ``team.s3cr3t@localhost``) and the public ``open-room``; users alice and mallory."""
    settings = {"ROOMS_OPEN": "false", "ROOMS_AUTO_CREATE": "false", "ALLOWED_HOSTS": "127.0.0.1", **settings}
    gateway = launch_gateway(directory, mqtt_url, **settings)
    subprocess.run(manage("shell", "-c", SETUP), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    return gateway


def log_in(gateway: Gateway, username: str, password: str) -> dict[str, str]:
    """The cookies (``sessionid``, ``csrftoken``) the login form gives a browser."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = browser.open(f"{gateway.http}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
    fields = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    browser.open(f"{gateway.http}/accounts/login/", data=urllib.parse.urlencode(fields).encode(), timeout=10)
    cookies = {cookie.name: cookie.value for cookie in jar}
    assert "sessionid" in cookies, f"{username} could not log in"
    return cookies


def request(gateway: Gateway, method: str, path: str, data: bytes | None = None, **headers: str) -> tuple[int, Any]:
    """Status and body (JSON when it is JSON) of one HTTP request with exactly these headers."""
    sent = urllib.request.Request(f"{gateway.http}{path}", data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(sent, timeout=10) as response:
            status, content, location = response.status, response.read(), None
    except urllib.error.HTTPError as error:
        status, content, location = error.code, error.read(), error.headers.get("Location")
    if location is not None:
        return status, location
    try:
        return status, json.loads(content)
    except ValueError:
        return status, content.decode(errors="replace")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def messages(gateway: Gateway, room: str, token: str = "alice-token") -> list[str]:
    """The room's history as a member sees it."""
    status, body = request(gateway, "GET", f"/api/rooms/{room}/messages", Authorization=f"Bearer {token}")
    assert status == 200, body
    return [message["message"] for message in body["messages"]]
