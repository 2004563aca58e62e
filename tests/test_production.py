"""The production profile (DEBUG off): refuses insecure settings, keeps secrets out of its output,
checks WebSocket origins in full, throttles logins, sends CSP, HSTS and Secure cookies, and closes
idle and slow connections."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import subprocess
import time
from http.cookies import SimpleCookie
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
import websockets

from tests.support import (
    PYTHON,
    ROOT,
    Mosquitto,
    Process,
    ahttp,
    free_port,
    fresh_database,
    gateway_env,
    manage,
    migrate,
    receive,
    wait_for_port,
)
from tests.test_events import SseClient

SECRET = "a-production-secret-that-is-certainly-long-enough-for-django"  # 50 characters and more
ADAPTER_ACCOUNT = "mqtt://gateway:gw-secret@127.0.0.1:1883"  # an account: anonymous MQTT is refused


def production_env(tmp_path, **settings) -> dict[str, str]:
    defaults = {"SECRET_KEY": SECRET, "ALLOWED_HOSTS": "127.0.0.1", "MQTT_URL": ADAPTER_ACCOUNT}
    defaults["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return gateway_env(DEBUG="false", **{**defaults, **settings})


def refused(argv: list[str], env: dict) -> str:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def check(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(manage("check"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_default_secret_and_hosts_are_refused(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="dev-insecure-only-for-make-run", ALLOWED_HOSTS="*")
    output = refused(manage("rungateway"), env)
    assert "gateway.E001" in output and "SECRET_KEY" in output
    assert "gateway.E002" in output and "ALLOWED_HOSTS" in output
    daphne = [PYTHON, "-m", "daphne", "-p", str(free_port()), "config.asgi:application"]
    assert "gateway.E001" in refused(daphne, env)  # any ASGI server, not only our commands


def test_open_rooms_are_refused(tmp_path):
    assert "gateway.E004" in refused(manage("runsmtp"), production_env(tmp_path, ROOMS_OPEN="true"))


def test_anonymous_mqtt_to_another_machine_is_refused(tmp_path):
    env = production_env(tmp_path, MQTT_URL="mqtt://broker.example.com:1883")
    output = refused(manage("runmqtt"), env)
    assert "gateway.E003" in output and "mqtt://user:password@host:port" in output


INSECURE = {
    "SECRET_KEY": ("x" * 64, "gateway.E001"),  # long, but one character: Django's rule wants 5 different
    "MQTT_URL": ("mqtt://127.0.0.1:1883", "gateway.E003"),  # anonymous, even on this machine
    "ROOMS_AUTO_CREATE": ("true", "gateway.E005"),
    "ALLOWED_HOSTS": ("chat.example.com,.co.uk", "gateway.E006"),
    "REDIS_URL": ("redis://127.0.0.1:6379/0,redis://:pw@redis.example.com:6379/0", "gateway.E008"),
}
SECURE = {
    "SECRET_KEY": SECRET,
    "MQTT_URL": "mqtts://gateway:gw-secret@broker.example.com:8883",
    "ROOMS_AUTO_CREATE": "false",
    "ALLOWED_HOSTS": "chat.example.com,.example.com",
    "REDIS_URL": "redis://:pw@127.0.0.1:6379/0,rediss://:pw@redis.example.com:6380/0",
}


@pytest.mark.parametrize("name", INSECURE)
def test_each_insecure_setting_is_refused_and_its_secure_form_starts(tmp_path, name):
    value, error = INSECURE[name]
    output = refused(manage("check"), production_env(tmp_path, **{**SECURE, name: value}))
    assert re.findall(r"gateway\.E\d+", output) == [error], output
    result = check(production_env(tmp_path, **SECURE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_password_in_clear_to_another_broker_is_refused(tmp_path):
    output = refused(manage("check"), production_env(tmp_path, MQTT_URL="mqtt://gw:pw@broker.example.com:1883"))
    assert "gateway.E007" in output and "mqtts://" in output


def test_public_suffix_wildcards_are_refused(tmp_path):
    output = refused(manage("check"), production_env(tmp_path, ALLOWED_HOSTS=".com,.github.io,.example.com"))
    assert "'.com'" in output and "'.github.io'" in output and "'.example.com'" not in output


def test_a_weighed_check_can_be_acknowledged_by_id(tmp_path):
    """A broker reached over a private container network (deploy/compose.yaml): gateway.E007, silenced."""
    env = production_env(tmp_path, MQTT_URL="mqtt://gw:pw@mosquitto:1883", SILENCED_SYSTEM_CHECKS="gateway.E007")
    result = check(env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_banner_hides_every_password(tmp_path, postgres_host):
    """Several Redis URLs (sharding): each password is hidden, not only the first; nor is the database's."""
    redis_urls = "redis://:first-secret@127.0.0.1:6379/0,redis://user:second-secret@127.0.0.1:6379/1"
    with fresh_database("banner") as database:
        database = database.replace("@", ":db-secret@", 1)  # the local PostgreSQL trusts, and ignores it
        env = production_env(tmp_path, REDIS_URL=redis_urls, SMTP_PORT=free_port(), DATABASE_URL=database)
        migrate(env)
        smtp = Process(manage("runsmtp"), env=env).start()
        try:
            smtp.wait_for("Quit with Ctrl-C.")
        finally:
            smtp.stop()
    for secret in ("first-secret", "second-secret", "db-secret"):
        assert secret not in smtp.output
    assert "redis://:***@127.0.0.1:6379/0,redis://user:***@127.0.0.1:6379/1" in smtp.output
    assert "Database   postgresql" in smtp.output


@pytest.fixture(scope="module")
def production_daphne(tmp_path_factory):
    """Plain daphne on the production profile, as behind a TLS proxy, with a user, alice."""
    tmp_path = tmp_path_factory.mktemp("production")
    port = free_port()
    env = production_env(
        tmp_path,
        BEHIND_TLS_PROXY="true",
        CSRF_TRUSTED_ORIGINS="https://trusted.example:8443",
        LOGIN_FAILURE_LIMIT=3,
        LOGIN_COOLOFF_SECONDS=3,
    )
    migrate(env)
    subprocess.run(manage("addroom", "lobby", "--public"), cwd=ROOT, env=env, check=True, capture_output=True)
    setup = (
        "from django.contrib.auth.models import User; User.objects.create_user('alice', password='right-one'); "
        "User.objects.create_user('bob', password='bobs-own')"
    )
    subprocess.run(manage("shell", "-c", setup), cwd=ROOT, env=env, check=True, capture_output=True)
    daphne = Process([PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], env=env)
    daphne.start()
    daphne.wait_for("Listening on TCP address")
    yield port
    daphne.stop()


async def test_websocket_from_a_foreign_origin_is_refused(production_daphne):
    url = f"ws://127.0.0.1:{production_daphne}/ws/chat/lobby/"
    for origin in ("http://evil.example", f"http://127.0.0.1:{free_port()}", f"https://127.0.0.1:{production_daphne}"):
        with pytest.raises(websockets.InvalidStatus) as refusal:
            await websockets.connect(url, origin=origin, open_timeout=10)
        assert refusal.value.response.status_code == 403, origin
    for origin in (f"http://127.0.0.1:{production_daphne}", "https://trusted.example:8443"):
        async with websockets.connect(url, origin=origin, open_timeout=10) as ws:
            assert (await receive(ws, "history"))["messages"] == []


async def test_behind_the_tls_proxy_the_origin_is_https(production_daphne):
    url = f"ws://127.0.0.1:{production_daphne}/ws/chat/lobby/"
    https = {"X-Forwarded-Proto": "https"}
    async with websockets.connect(
        url, origin=f"https://127.0.0.1:{production_daphne}", additional_headers=https, open_timeout=10
    ) as ws:
        assert (await receive(ws, "history"))["messages"] == []
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url, origin=f"http://127.0.0.1:{production_daphne}", additional_headers=https)


async def test_the_message_api_answers_only_for_allowed_hosts(production_daphne):
    posted = await ahttp("POST", f"http://127.0.0.1:{production_daphne}/api/rooms/lobby/messages", {"message": "hi"})
    assert posted[0] == 201
    refused = await ahttp("POST", f"http://localhost:{production_daphne}/api/rooms/lobby/messages", {"message": "x"})
    assert refused == (400, {"type": "error", "error": "the Host header is not one of ALLOWED_HOSTS"})


class Browser:
    """HTTP as a browser behind the TLS proxy sends it: X-Forwarded-Proto https, its cookies (Secure ones
    too: the proxy's side is https), the page's own Origin on posts."""

    def __init__(self, port: int, proto: str = "https") -> None:
        self.port, self.proto = port, proto
        self.cookies = SimpleCookie()
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, dict, str]:
        headers = {"X-Forwarded-Proto": self.proto, "Host": f"127.0.0.1:{self.port}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={morsel.value}" for name, morsel in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers |= {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"https://127.0.0.1:{self.port}"}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            for value in response.headers.get_all("Set-Cookie") or []:
                self.set_cookies.append(value)
                self.cookies.load(value)
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()

    def login(self, username: str, password: str) -> int:
        self.request("GET", "/accounts/login/")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": self.cookies["csrftoken"].value}
        return self.request("POST", "/accounts/login/", form)[0]


def test_pages_send_csp_hsts_and_secure_cookies_behind_tls(production_daphne):
    browser = Browser(production_daphne)
    status, headers, _ = browser.request("GET", "/accounts/login/")
    assert status == 200
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert all("Secure" in cookie for cookie in browser.set_cookies) and browser.set_cookies
    assert browser.login("alice", "right-one") == 302
    session = [cookie for cookie in browser.set_cookies if cookie.startswith("sessionid=")]
    assert session and "Secure" in session[0] and "HttpOnly" in session[0]
    # Plain http (no proxy saying https): no HSTS, which a browser would ignore there anyway.
    _, headers, _ = Browser(production_daphne, proto="http").request("GET", "/accounts/login/")
    assert "Strict-Transport-Security" not in headers and "Content-Security-Policy" in headers


def test_logins_are_throttled_per_user_and_address(production_daphne):
    browser = Browser(production_daphne)
    # The form again, twice; the third wrong password (LOGIN_FAILURE_LIMIT=3) locks alice out from here.
    assert [browser.login("alice", f"wrong-{n}") for n in range(3)] == [200, 200, 429]
    assert browser.login("alice", "right-one") == 429  # the right password, too late (and the cool-off restarts)
    locked = time.monotonic()
    assert Browser(production_daphne).login("bob", "bobs-own") == 302  # another user from the same address
    time.sleep(max(0.0, locked + 3.5 - time.monotonic()))  # the cool-off passing (3 s) is what is under test
    assert Browser(production_daphne).login("alice", "right-one") == 302


@pytest.fixture(scope="module")
def production_gateway(tmp_path_factory):
    """rungateway on the production profile, its adapter logging in to a throwaway Mosquitto that takes
    no anonymous clients, with short timeouts."""
    directory = tmp_path_factory.mktemp("production-gateway")
    passwords = directory / "passwords"
    passwords.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "gateway", "gw-secret"], check=True)
    broker = Mosquitto(config=f"allow_anonymous false\npassword_file {passwords}").start()
    http_port, smtp_port = free_port(), free_port()
    env = production_env(
        directory,
        MQTT_URL=f"mqtt://gateway:gw-secret@127.0.0.1:{broker.port}",
        HTTP_PORT=http_port,
        SMTP_PORT=smtp_port,
        STATIC_ROOT=directory,
        HTTP_IDLE_TIMEOUT=1,
        SMTP_IDLE_TIMEOUT=1,
        SMTP_SESSION_TIMEOUT=3,
    )
    try:
        migrate(env)
        made = subprocess.run(
            manage("addroom", "lobby", "--public"), cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        secret_address = made.stdout.split("Secret mail address: ")[1].strip()
        gateway = Process(manage("rungateway"), env=env).start()
        gateway.wait_for("Quit with Ctrl-C.")
        assert "gw-secret" not in gateway.output
        yield SimpleNamespace(http_port=http_port, smtp_port=smtp_port, secret_address=secret_address)
        assert gateway.stop() == 0, gateway.output
    finally:
        broker.kill()


async def closed_after(reader: asyncio.StreamReader, timeout: float = 15) -> tuple[float, bytes]:
    """Read until the server closes; how long that took, and what it said."""
    started, said = time.monotonic(), b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(1024):
            said += chunk
    return time.monotonic() - started, said


async def test_idle_http_connections_are_closed(production_gateway):
    http_port = production_gateway.http_port
    half_handshake = b"GET /ws/chat/lobby/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    for opening in (b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", half_handshake):
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(opening)
        took, _ = await closed_after(reader)
        writer.close()
        assert 0.5 < took < 10, opening  # HTTP_IDLE_TIMEOUT=1


async def test_open_streams_are_not_idle_connections(production_gateway):
    """A WebSocket and an event stream whose clients say nothing outlive HTTP_IDLE_TIMEOUT (1 s)."""
    http_port = production_gateway.http_port
    base = f"127.0.0.1:{http_port}"
    ws = await websockets.connect(f"ws://{base}/ws/chat/lobby/", origin=f"http://{base}", open_timeout=10)
    await receive(ws, "history")
    stream = await asyncio.to_thread(SseClient, http_port, "/api/rooms/lobby/events")
    await asyncio.sleep(2.5)  # the clients' silence, longer than the idle timeout, is what is under test
    posted = await ahttp("POST", f"http://{base}/api/rooms/lobby/messages", {"message": "still there?"})
    assert posted[0] == 201
    assert (await receive(ws))["message"] == "still there?"
    while (event := await asyncio.to_thread(stream.events.get, True, 10))["event"] != "message":
        pass  # presence comes and goes
    assert json.loads(event["data"])["message"] == "still there?"
    stream.close()
    await ws.close()


async def test_an_smtp_session_trickling_bytes_is_closed(production_gateway):
    """Each command comes within the idle timeout (1 s), which it resets: the session limit (3 s) ends it."""
    smtp_port = production_gateway.smtp_port
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp_port)
    assert (await reader.readline()).startswith(b"220")
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"NOOP\r\n" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)  # the slow client's pace: what is under test

    trickling = asyncio.create_task(trickle())
    took, said = await closed_after(reader)
    trickling.cancel()
    writer.close()
    assert said.count(b"250") >= 3 and b"421 4.4.2" in said  # its NOOPs were answered, then it was closed
    assert 2.5 < time.monotonic() - started < 10 and took > 2.5


async def test_a_mail_body_trickled_past_the_idle_timeout_is_cut_off(production_gateway):
    """aiosmtpd's idle timer runs from the DATA command: the whole body must come within it (1 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", production_gateway.smtp_port)
    for command in (
        None,
        b"HELO client",
        b"MAIL FROM:<a@example.com>",
        f"RCPT TO:<{production_gateway.secret_address}>".encode(),
        b"DATA",
    ):
        if command:
            writer.write(command + b"\r\n")
        assert (await reader.readline())[:1] in (b"2", b"3"), command
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"Subject: slow\r\n\r\n" + b"x\r\n" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)  # the slow client's pace: what is under test

    trickling = asyncio.create_task(trickle())
    took, said = await closed_after(reader)
    trickling.cancel()
    writer.close()
    assert 0.8 < took < 2.5 and b"250" not in said  # SMTP_IDLE_TIMEOUT=1, before the session limit (3 s)
    assert time.monotonic() - started < 2.5


@pytest.fixture
def nginx_in_front(production_gateway, tmp_path):
    """deploy/nginx/compose.conf and gateway-proxy.conf (plain HTTP) in front of the gateway's daphne."""
    if shutil.which("nginx") is None:
        pytest.fail("nginx is needed to check deploy/nginx/: apt-get install nginx-light", pytrace=False)
    deploy, port = ROOT / "deploy" / "nginx", free_port()
    conf = (deploy / "compose.conf").read_text()
    for old, new in {
        "server asgi-1:8000": f"server 127.0.0.1:{production_gateway.http_port}",
        "server asgi-2:8000": f"server 127.0.0.1:{production_gateway.http_port}",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "/etc/nginx/snippets/gateway-proxy.conf": str(deploy / "gateway-proxy.conf"),
    }.items():
        assert old in conf, old
        conf = conf.replace(old, new)
    (tmp_path / "gateway.conf").write_text(conf)
    temp = " ".join(
        f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; pid {tmp_path / 'nginx.pid'}; error_log {tmp_path / 'error.log'}; worker_processes 1;\n"
        f"events {{}}\nhttp {{ access_log off; {temp} include {tmp_path / 'gateway.conf'}; }}\n"
    )
    process = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    try:
        wait_for_port(port, lambda: process.poll() is None)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_nginx_cuts_off_a_client_sending_a_byte_a_second(nginx_in_front):
    """daphne restarts its idle timer with every byte; nginx wants the whole header in 10 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", nginx_in_front)

    async def trickle() -> None:
        for byte in b"GET /chat/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(1)  # the slow client's pace: what is under test

    trickling = asyncio.create_task(trickle())
    took, said = await closed_after(reader, timeout=30)
    trickling.cancel()
    writer.close()
    assert 9 < took < 20 and not said.startswith(b"HTTP/1.1 200")
