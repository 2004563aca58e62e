"""The browser pages are served, with their static files, by the gateway itself."""

from __future__ import annotations

from tests.support import ahttp, unique


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
