"""Who may post where: members-only rooms, API tokens, secret mail addresses, sender allowlists.

Each forbidden thing is refused with its answer, and the allowed thing still works right after.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import smtplib
import subprocess
import urllib.parse
import urllib.request

import pytest
import websockets

from gateway.topics import in_topic
from tests.support import ROOT, ahttp, apublish, asmtp, build_mail, join, launch_gateway, manage, receive, unique

SETUP = """
from django.contrib.auth.models import User
from gateway.models import ApiToken, Room
alice = User.objects.create_user("alice", password="pw-alice")
User.objects.create_user("mallory", password="pw-mallory")
ApiToken.objects.create(user=alice, key="alice-token")
ApiToken.objects.create(user=User.objects.get(username="mallory"), key="mallory-token")
Room.objects.create(name="open-room", public=True, email_open=True, mqtt_open=True)
team = Room.objects.create(name="team", email_token="s3cr3t", email_allowlist="boss@example.com\\n@team.example")
team.members.add(alice)
"""


@pytest.fixture(scope="module")
def closed(tmp_path_factory, mosquitto):
    """A gateway whose rooms are closed (the production default), set up with users, tokens and rooms."""
    gateway = launch_gateway(
        tmp_path_factory.mktemp("closed"), mosquitto, ROOMS_OPEN="false", ROOMS_AUTO_CREATE="false"
    )
    subprocess.run(manage("shell", "-c", SETUP), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    yield gateway
    assert gateway.process.stop() == 0


def api(gateway, method: str, path: str, body=None, token: str | None = None):
    request = urllib.request.Request(
        f"{gateway.http}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_members_only_room_over_the_api(closed):
    path = "/api/rooms/team/messages"  # to outsiders, a members-only room looks missing
    assert api(closed, "POST", path, {"message": "anonymous"})[0] == 404
    assert api(closed, "GET", path)[0] == 404
    assert api(closed, "POST", path, {"message": "not a member"}, token="mallory-token")[0] == 404
    assert api(closed, "POST", path, {"message": "wrong"}, token="made-up")[0] == 404
    status, message = api(closed, "POST", path, {"message": "from alice"}, token="alice-token")
    assert status == 201 and message["message"] == "from alice"
    assert [m["message"] for m in api(closed, "GET", path, token="alice-token")[1]["messages"]] == ["from alice"]
    assert api(closed, "POST", "/api/rooms/open-room/messages", {"message": "anyone"})[0] == 201
    names = lambda token: [r["name"] for r in api(closed, "GET", "/api/rooms/", token=token)[1]["rooms"]]  # noqa: E731
    assert "team" not in names(None) and "team" in names("alice-token")


def test_unknown_rooms_are_not_created(closed):
    assert api(closed, "POST", f"/api/rooms/{unique()}/messages", {"message": "x"}, token="alice-token")[0] == 404


async def test_members_only_room_over_websocket_and_sse(closed):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(closed.ws("team"), open_timeout=10)
    assert refused.value.response.status_code == 403
    ws = await websockets.connect(
        closed.ws("team"), additional_headers={"Authorization": "Bearer alice-token"}, open_timeout=10
    )
    assert json.loads(await ws.recv())["type"] == "history"
    await ws.close()
    assert (await ahttp("GET", f"{closed.http}/api/rooms/team/events"))[0] == 404
    ws, _ = await join(closed, "open-room")
    await ws.close()


async def test_members_only_page_asks_to_log_in(closed):
    request = urllib.request.Request(f"{closed.http}/chat/team/")
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=10)
    assert redirect.value.code == 302 and redirect.value.headers["Location"].startswith("/accounts/login/")
    assert (await ahttp("GET", f"{closed.http}/chat/open-room/"))[0] == 200
    status, page = await ahttp("GET", f"{closed.http}/accounts/login/?next=/chat/team/")
    assert status == 200 and 'name="password"' in page


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


async def test_mail_takes_the_secret_address_and_allowed_senders_only(closed):
    refusals = {
        "team@localhost": (550, b"No such recipient"),  # only at its secret address, and not telling
        "team.wrong@localhost": (550, b"No such recipient"),
        f"{unique()}@localhost": (550, b"No such recipient"),
    }
    for recipient, (code, reply) in refusals.items():
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asmtp(closed.smtp_port, "boss@example.com", [recipient], build_mail(recipient))
        assert refused.value.recipients[recipient][0] == code and reply in refused.value.recipients[recipient][1]
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asmtp(closed.smtp_port, "stranger@example.com", ["team.s3cr3t@localhost"], build_mail("team"))
    assert b"may not post" in refused.value.recipients["team.s3cr3t@localhost"][1]
    for sender in ("boss@example.com", "dev@team.example"):
        mail = build_mail("team", sender, sender=sender)  # its From on the allowlist too
        assert await asmtp(closed.smtp_port, sender, ["team.s3cr3t@localhost"], mail) == {}
    status, body = api(closed, "GET", "/api/rooms/team/messages", token="alice-token")
    assert [m["message"].split("\n")[0] for m in body["messages"]][-2:] == ["boss@example.com", "dev@team.example"]


def rotate(gateway, room: str) -> str:
    """The room's new secret address, as ``rotateroomtoken`` prints it."""
    done = subprocess.run(
        manage("rotateroomtoken", room), cwd=ROOT, env=gateway.env, check=True, capture_output=True, text=True
    )
    return done.stdout.split()[-1]


async def test_rotating_the_secret_address_stops_the_old_one_at_once(closed):
    old_address = rotate(closed, "open-room")
    assert old_address.startswith("open-room.") and old_address.endswith("@localhost")
    assert await asmtp(closed.smtp_port, "a@example.com", [old_address], build_mail("open-room", "first")) == {}
    new_address = rotate(closed, "open-room")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:  # at once: no cached rules for secret addresses
        await asmtp(closed.smtp_port, "a@example.com", [old_address], build_mail("open-room", "too late"))
    assert refused.value.recipients[old_address][0] == 550
    assert await asmtp(closed.smtp_port, "a@example.com", [new_address], build_mail("open-room", "rotated")) == {}


async def test_mqtt_into_an_unknown_room_is_rejected(closed):
    room = unique()
    ws, _ = await join(closed, "open-room")
    await apublish(closed.mqtt_url, in_topic(room), "nobody made this room")
    await apublish(closed.mqtt_url, "rooms/open-room/in", "fine")
    assert (await receive(ws))["message"] == "fine"
    closed.process.wait_for(f"Rejected MQTT message on rooms/{room}/in: no room {room} here")
    await ws.close()


async def test_a_member_logs_in_and_the_session_opens_the_room(closed):
    """The login form's session cookie is what the WebSocket (AuthMiddlewareStack) and the API see."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = browser.open(f"{closed.http}/accounts/login/", timeout=10).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
    login = urllib.parse.urlencode(
        {"username": "alice", "password": "pw-alice", "csrfmiddlewaretoken": csrf, "next": "/chat/team/"}
    ).encode()
    page = browser.open(f"{closed.http}/accounts/login/", data=login, timeout=10)
    assert page.url.endswith("/chat/team/") and page.status == 200
    html = page.read().decode()  # a closed room: its plain address would be refused, so it is not shown
    assert "team@localhost" not in html and "only at its secret address" in html
    assert "open-room@localhost" in browser.open(f"{closed.http}/chat/open-room/", timeout=10).read().decode()
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    origin = f"http://127.0.0.1:{closed.http_port}"
    ws = await websockets.connect(
        closed.ws("team"), additional_headers={"Cookie": cookie}, origin=origin, open_timeout=10
    )
    assert json.loads(await ws.recv())["type"] == "history"
    await ws.close()
