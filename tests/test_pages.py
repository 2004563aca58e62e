"""The browser pages are served, with their static files, by the gateway itself."""

from __future__ import annotations

import subprocess

from tests.support import PYTHON, ROOT, Process, ahttp, free_port, gateway_env, manage, migrate, unique


async def page(url: str) -> tuple[int, str]:
    return await ahttp("GET", url)


async def test_room_list_shows_rooms_with_activity(gateway):
    room = unique()
    await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "hi"})
    status, html = await page(f"{gateway.http}/chat/")
    assert status == 200
    assert f'href="/chat/{room}/"' in html
    assert 'pattern="[A-Za-z0-9_-]{1,64}"' in html


async def test_room_page_and_its_script(gateway):
    room = unique()
    status, html = await page(f"{gateway.http}/chat/{room}/")
    assert status == 200
    assert f'<script id="room-name" type="application/json">"{room}"</script>' in html
    assert 'id="log"' in html and 'id="message-input"' in html
    for asset in ("gateway/chat.js", "gateway/chat.css", "gateway/index.js"):
        status, body = await page(f"{gateway.http}/static/{asset}")
        assert status == 200 and len(body) > 100, asset
    assert (await page(f"{gateway.http}/"))[0] == 200  # / redirects to /chat/


async def test_production_serves_collected_static_files_with_whitenoise(tmp_path):
    port = free_port()
    env = gateway_env(
        DEBUG="false",
        SECRET_KEY="a-test-secret-that-is-long-enough-for-django-by-its-rule",
        ALLOWED_HOSTS="127.0.0.1",
        MQTT_URL="mqtt://gateway:gw-secret@127.0.0.1:1883",  # an account (daphne alone does not connect)
        STATIC_ROOT=tmp_path / "static",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    migrate(env)
    subprocess.run(manage("collectstatic", "--noinput", "-v0"), cwd=ROOT, env=env, check=True)
    daphne = Process([PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], env=env)
    daphne.start()
    try:
        daphne.wait_for("Listening on TCP address")
        status, body = await page(f"http://127.0.0.1:{port}/static/gateway/chat.js")
        assert status == 200 and "textContent" in body
        assert (await page(f"http://127.0.0.1:{port}/static/gateway/missing.js"))[0] == 404
    finally:
        daphne.stop()
