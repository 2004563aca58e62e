"""The room pages in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading

import pytest
from playwright.sync_api import Page, expect

from gateway.topics import in_topic
from tests.attachment_mails import PDF, png, thunderbird_pdf
from tests.support import (
    ROOT,
    build_mail,
    free_port,
    http_json,
    launch_gateway,
    mqtt_publish,
    smtp_send,
    start_gateway,
    unique,
)
from tests.test_production import production_daphne  # noqa: F401 (a fixture)


@pytest.fixture
def page(browser):
    """A page in a fresh context; whatever a test does with it, the pages' Content-Security-Policy
    (gateway/csp.py) must refuse nothing they do (Chromium reports each refusal on the console)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    refusals = []
    context.on("console", lambda message: "Content Security Policy" in message.text and refusals.append(message.text))
    yield context.new_page()
    context.close()
    assert refusals == []


def open_room(page: Page, gateway, room: str) -> Page:
    page.goto(f"{gateway.http}/chat/{room}/")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


def post(gateway, room: str, text: str, sender: str = "api") -> dict:
    status, body = http_json("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": text, "sender": sender})
    assert status == 201, body
    return body


def say(page: Page, text: str) -> None:
    page.locator("#message-input").fill(text)
    page.locator("#message-input").press("Enter")


def restart(gateway) -> None:
    """A fresh ``rungateway`` on the same ports and database as the one just stopped."""
    start_gateway(gateway)


def stop(gateway) -> None:
    """SIGTERM, as a service manager would: the gateway must stop cleanly."""
    code = gateway.process.stop()
    assert code == 0, f"rungateway exited {code} on SIGTERM:\n{gateway.process.output[-3000:]}"


def texts(page: Page) -> list[str]:
    return page.locator(".message .text").all_inner_texts()


def test_pages_see_each_other_and_every_source(browser, page, gateway):
    room = unique()
    other = browser.new_page()
    open_room(page, gateway, room)
    open_room(other, gateway, room)
    page.locator("#sender-input").fill("alice")
    say(page, "hello from alice")
    expect(other.locator(".message[data-source=websocket]")).to_contain_text("hello from alice")
    expect(other.locator(".message[data-source=websocket] .badge")).to_have_text("browser")
    expect(page.locator(".message.mine")).to_contain_text("hello from alice")
    expect(other.locator(".message.mine")).to_have_count(0)  # other is "anonymous", not alice

    mqtt_publish(gateway.mqtt_url, in_topic(room), json.dumps({"message": "hello from a device", "sender": "d1"}))
    smtp_send(gateway.smtp_port, "bob@example.com", [f"{room}@localhost"], build_mail(room, "Mail", "hello by mail"))
    post(gateway, room, "hello over the API")
    for source, label, text in [
        ("mqtt", "device", "hello from a device"),
        ("email", "email", "hello by mail"),
        ("http", "API", "hello over the API"),
    ]:
        message = other.locator(f".message[data-source={source}]")
        expect(message).to_contain_text(text)
        expect(message.locator(".badge")).to_have_text(label)
        expect(message.locator("time")).to_be_visible()  # local time
    # Who is here: two browsers (alice, and the other page), and the device that just posted.
    expect(other.locator("#presence .presence-browser .name")).to_have_text(["alice", "anonymous"])
    expect(other.locator("#presence .presence-device .name")).to_have_text(["d1"])
    other.close()


def test_enter_sends_shift_enter_is_a_newline_and_empty_is_not_sent(page, gateway):
    room = unique()
    open_room(page, gateway, room)
    page.locator("#message-input").fill("   ")
    page.locator("#message-input").press("Enter")
    page.locator("#message-input").fill("line one")
    page.locator("#message-input").press("Shift+Enter")
    page.locator("#message-input").type("line two")
    page.locator("#message-input").press("Enter")
    expect(page.locator(".message .text")).to_have_text(["line one\nline two"])
    expect(page.locator("#message-input")).to_have_value("")


def test_renaming_rejoins_under_the_new_name(browser, page, gateway):
    room = unique()
    open_room(page, gateway, room)
    page.locator("#sender-input").fill("erin")
    say(page, "first as erin")
    expect(page.locator(".message.mine")).to_have_count(1)
    page.locator("#sender-input").fill("frank")
    expect(page.locator("#presence .presence-browser .name")).to_have_text(["frank"])  # rejoined as frank
    expect(page.locator(".message.mine")).to_have_count(0)  # erin's message is no longer "mine"
    say(page, "now as frank")
    expect(page.locator(".message.mine .text")).to_have_text(["now as frank"])
    expect(page.locator(".message .text")).to_have_text(["first as erin", "now as frank"])  # nothing twice


def test_reload_shows_history_and_older_pages_load(page, gateway):
    room = unique()
    for n in range(60):
        post(gateway, room, f"message {n}")
    open_room(page, gateway, room)
    expect(page.locator(".message")).to_have_count(50)
    expect(page.locator(".message").first).to_contain_text("message 10")
    expect(page.locator(".message").last).to_contain_text("message 59")  # newest at the bottom
    page.locator("#load-earlier").click()
    expect(page.locator(".message")).to_have_count(60)
    expect(page.locator(".message").first).to_contain_text("message 0")
    expect(page.locator("#load-earlier")).to_be_hidden()
    assert texts(page) == [f"message {n}" for n in range(60)]
    page.reload()
    expect(page.locator(".message")).to_have_count(50)
    expect(page.locator(".message").last).to_contain_text("message 59")


XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


def test_html_in_messages_is_text_and_links_are_safe(page, gateway):
    room = unique()
    post(gateway, room, XSS)
    open_room(page, gateway, room)
    post(gateway, room, XSS + " see https://example.com/a, or javascript:alert(1)")  # live, too
    text = page.locator(".message .text")
    expect(text).to_have_text([XSS, XSS + " see https://example.com/a, or javascript:alert(1)"])
    assert page.evaluate("window.__xss") is None
    assert page.locator("#log img, #log script").count() == 0
    link = text.locator("a")
    expect(link).to_have_count(1)
    expect(link).to_have_text("https://example.com/a")
    expect(link).to_have_attribute("href", "https://example.com/a")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(link).to_have_attribute("target", "_blank")
    page.reload()  # and from the history
    expect(text).to_have_count(2)
    assert page.evaluate("window.__xss") is None


def chart_data(page: Page, field: str) -> list[float]:
    script = f"Chart.getChart(document.querySelector('canvas[data-field={field}]')).data.datasets[0].data"
    return page.evaluate(script)


def test_readings_draw_and_update_a_chart(page, gateway):
    room = unique()
    open_room(page, gateway, room)
    mqtt_publish(gateway.mqtt_url, in_topic(room), json.dumps({"temperature": 20.5}))
    expect(page.locator("canvas[data-field=temperature]")).to_be_visible()
    latest = page.locator(".chart-latest[data-field=temperature]")
    expect(latest).to_contain_text("temperature: 20.5")
    mqtt_publish(gateway.mqtt_url, in_topic(room), json.dumps({"temperature": 22}))
    expect(latest).to_contain_text("temperature: 22 at ")
    assert chart_data(page, "temperature") == [20.5, 22]
    expect(page.locator("#presence .presence-device")).to_have_count(1)  # the device that posted
    page.reload()  # the chart is built from the history as well
    expect(page.locator("canvas[data-field=temperature]")).to_be_visible()
    expect(latest).to_contain_text("temperature: 22")
    assert chart_data(page, "temperature") == [20.5, 22]


def test_a_mails_files_show_as_links_and_an_image_preview(page, gateway):
    room = unique()
    open_room(page, gateway, room)
    address = f"{room}@localhost"
    smtp_send(gateway.smtp_port, "alice@example.com", [address], thunderbird_pdf(address, image=png(40, 30)))
    message = page.locator(".message[data-source=email]")
    expect(message.locator(".attachment-link")).to_have_text(["📎 Angebot.pdf", "📎 chart.png"])
    preview = message.locator(".attachment-preview img")
    expect(preview).to_have_count(1)  # the image, not the PDF
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle(), timeout=10_000)
    assert preview.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [40, 30]
    expect(message.locator("dl.data")).to_have_count(0)  # not shown as a reading
    # The PDF's link downloads it, from the gateway's own origin.
    href = message.locator(".attachment-link").first.get_attribute("href")
    assert href.startswith(f"/api/rooms/{room}/attachments/")
    got = page.evaluate(
        """url => fetch(url).then(async r => [r.status, r.headers.get("content-disposition"), (await r.text())])""",
        href,
    )
    assert got == [200, 'attachment; filename="Angebot.pdf"', PDF.decode()]


def test_attachments_a_message_makes_up_are_not_shown(page, gateway):
    """Only a mail's files are shown as files: not what a device sends as data."""
    room = unique()
    open_room(page, gateway, room)
    fake = [{"name": "x", "type": "image/png", "size": 1, "url": f"/api/rooms/{room}/attachments/x"}]
    mqtt_publish(gateway.mqtt_url, in_topic(room), json.dumps({"attachments": fake}))
    expect(page.locator(".message[data-source=mqtt] dl.data")).to_have_count(1)  # shown as the data it is
    expect(page.locator(".attachment")).to_have_count(0)


def test_server_restart_the_page_reconnects_and_catches_up_once(page, tmp_path, mosquitto):
    gateway = launch_gateway(tmp_path, mosquitto)
    room = unique()
    try:
        open_room(page, gateway, room)
        post(gateway, room, "before the restart")
        expect(page.locator(".message")).to_have_count(1)
        stop(gateway)
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        restart(gateway)
        post(gateway, room, "while the page was away")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=30_000)
        expect(page.locator(".message .text")).to_have_text(["before the restart", "while the page was away"])
        post(gateway, room, "after it came back")  # and it is live again
        expect(page.locator(".message .text")).to_have_text(
            ["before the restart", "while the page was away", "after it came back"]
        )
    finally:
        gateway.process.stop()


def test_a_page_that_saw_no_message_before_a_restart_misses_none_after_it(page, tmp_path, mosquitto):
    """The page joined an empty room and saw nothing before the restart: it reconnects from where its
    history left it (``last_id``), not as a newcomer who gets only the newest ``HISTORY_ON_JOIN``."""
    gateway = launch_gateway(tmp_path, mosquitto, HISTORY_ON_JOIN=1)
    room = unique()
    try:
        open_room(page, gateway, room)
        expect(page.locator("#log-empty")).to_contain_text("No messages yet")  # the history came, empty
        stop(gateway)
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        restart(gateway)
        post(gateway, room, "first while away")
        post(gateway, room, "second while away")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=30_000)
        expect(page.locator(".message .text")).to_have_text(["first while away", "second while away"])
    finally:
        gateway.process.stop()


def test_a_failed_send_is_marked_and_retried(page, tmp_path, mosquitto):
    gateway = launch_gateway(tmp_path, mosquitto)
    room = unique()
    try:
        open_room(page, gateway, room)
        stop(gateway)
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        say(page, "typed while offline")
        failed = page.locator(".message.failed")
        expect(failed).to_contain_text("typed while offline")
        expect(failed.locator(".retry")).to_be_visible()
        expect(page.locator("#status")).to_contain_text("1 unsent")

        restart(gateway)
        expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=30_000)
        failed.locator(".retry").click()
        expect(failed).to_have_count(0)
        expect(page.locator(".message.mine[data-id] .text")).to_have_text(["typed while offline"])
        expect(page.locator(".message .text")).to_have_text(["typed while offline"])
        status, body = http_json("GET", f"{gateway.http}/api/rooms/{room}/messages")
        assert [m["message"] for m in body["messages"]] == ["typed while offline"], body
    finally:
        gateway.process.stop()


def test_a_message_the_server_refuses_is_marked_failed_with_its_reason(page, gateway):
    room = unique()
    open_room(page, gateway, room)
    say(page, "x" * 4001)  # longer than MESSAGE_MAX_LENGTH: the server answers with an error frame
    failed = page.locator(".message.failed")
    expect(failed.locator(".failed-note")).to_contain_text("longer than")
    expect(page.locator("#error")).to_be_visible()
    say(page, "a short one")
    expect(page.locator(".message[data-id] .text")).to_have_text(["a short one"])
    expect(failed).to_have_count(1)


def test_screenshot_of_a_busy_room(page, gateway):
    room = unique("lobby")
    post(gateway, room, "Welcome! Post here from a device, a mail client or curl.", "gateway")
    mqtt_publish(gateway.mqtt_url, in_topic(room), json.dumps({"message": "door opened", "sender": "hall-sensor"}))
    for value in (20.5, 21.2, 21.9, 21.4, 22.3, 22.8):
        mqtt_publish(gateway.mqtt_url, in_topic(room), json.dumps({"temperature": value, "sender": "thermo"}))
    smtp_send(gateway.smtp_port, "carol@example.com", [f"{room}@localhost"], build_mail(room, "Lunch", "Noon?"))
    page.goto(f"{gateway.http}/chat/")  # the name is remembered for the room page
    page.evaluate("localStorage.setItem('chat.sender', 'dave')")
    open_room(page, gateway, room)
    say(page, "Sounds good, see https://example.com/menu")
    expect(page.locator(".message")).to_have_count(10)
    expect(page.locator(".message.mine")).to_have_count(1)
    expect(page.locator(".chart-latest[data-field=temperature]")).to_contain_text("22.8")
    expect(page.locator("#presence .presence-browser .name")).to_have_text(["dave"])
    page.locator("#post-elsewhere summary").click()
    page.locator("#message-input").blur()
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=artifacts / "room.png")
    assert (artifacts / "room.png").stat().st_size > 10_000  # copy it to docs/screenshot-room.png to update the README


def test_room_list_explains_bad_names_and_enters_good_ones(page, gateway):
    room = unique()
    post(gateway, room, "hi")
    page.goto(f"{gateway.http}/chat/")
    expect(page.locator(f'a[href="/chat/{room}/"]')).to_be_visible()
    page.locator("#room-input").fill("bad name!")
    page.locator("#room-input").press("Enter")
    expect(page.locator("#room-error")).to_contain_text("Not allowed")
    expect(page).to_have_url(f"{gateway.http}/chat/")
    page.locator("#room-input").fill(room)
    page.locator("#room-input").press("Enter")
    expect(page).to_have_url(f"{gateway.http}/chat/{room}/")
    expect(page.locator(".message .text")).to_have_text(["hi"])


def test_phone_sized_viewport_and_keyboard(browser, gateway):
    room = unique()
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = open_room(context.new_page(), gateway, room)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the phone
    expect(page.locator("#send")).to_be_in_viewport()
    for control in ("sender-input", "message-input"):  # labelled controls
        expect(page.locator(f"label[for={control}]")).to_be_visible()
    page.locator("#message-input").focus()
    page.keyboard.type("from a phone")
    page.keyboard.press("Enter")
    expect(page.locator(".message .text")).to_have_text(["from a phone"])
    context.close()


def test_post_from_elsewhere_panel_copies_working_commands(browser, gateway):
    room = unique()
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = open_room(context.new_page(), gateway, room)
    page.locator("#post-elsewhere summary").click()
    snippets = page.locator("#post-elsewhere .snippet code")
    expect(snippets).to_have_count(3)
    expect(snippets.nth(0)).to_contain_text(f"-t rooms/{room}/in")
    expect(snippets.nth(1)).to_contain_text(f"{room}@localhost")
    expect(snippets.nth(2)).to_contain_text(f"{gateway.http}/api/rooms/{room}/messages")
    page.locator("#post-elsewhere .copy").nth(2).click()
    expect(page.locator("#post-elsewhere .copy").nth(2)).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == snippets.nth(2).inner_text()
    for n in (0, 2):  # the mosquitto_pub and curl lines work as shown
        subprocess.run(snippets.nth(n).inner_text(), shell=True, check=True, capture_output=True, timeout=20)
    expect(page.locator(".message .text")).to_have_text(["hello", "hello"])
    sources = page.locator(".message").evaluate_all("items => items.map(item => item.dataset.source)")
    assert sorted(sources) == ["http", "mqtt"]
    context.close()


OPEN_SOCKET = """url => new Promise(done => {
    const ws = new WebSocket(url);
    ws.onopen = () => { done("open"); ws.close(); };
    ws.onclose = event => done(`closed ${event.code}`);
})"""


class BlankPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!DOCTYPE html><title>another site</title>")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def other_site():
    """A page of another origin: another port of the same host, 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), BlankPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_page_of_another_origin_cannot_open_the_websocket(page, production_daphne, other_site):  # noqa: F811
    """Production: the page's origin is compared in full; the same host on another port is refused."""
    url = f"ws://127.0.0.1:{production_daphne}/ws/chat/lobby/"
    page.goto(other_site)
    assert page.evaluate(OPEN_SOCKET, url) == "closed 1006"  # the handshake's 403, as a browser sees it
    page.goto(f"http://127.0.0.1:{production_daphne}/accounts/login/")  # the gateway's own page, under its CSP
    assert page.evaluate(OPEN_SOCKET, url) == "open"


COUNT_SOCKETS = """
const Counted = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    window.socketsOpened = (window.socketsOpened || 0) + 1;
  }
};
window.WebSocket = Counted;
"""


def test_told_the_server_restarts_the_page_comes_back_within_two_seconds_and_backs_off_if_it_fails(
    page, tmp_path, mosquitto
):
    """Close code 1012 (the gateway's daphne on SIGTERM): the next attempt 0.2-2 s later, not after the
    doubling backoff; attempts that then fail (the new process not answering yet) double as before
    (0.8-1.2 s, then 1.6-2.4 s). The page's clock is Playwright's, moved by hand: no waiting on time."""
    gateway = launch_gateway(tmp_path, mosquitto)
    room = unique()
    sockets = lambda: page.evaluate("window.socketsOpened")  # noqa: E731
    try:
        page.add_init_script(COUNT_SOCKETS)
        page.clock.install()
        open_room(page, gateway, room)
        post(gateway, room, "before the restart")
        expect(page.locator(".message")).to_have_count(1)
        page.clock.pause_at(page.evaluate("Date.now()") + 1000)
        assert sockets() == 1
        stop(gateway)  # it tells the page 1012
        expect(page.locator("#status")).to_contain_text("The server is restarting")
        page.clock.run_for(199)
        assert sockets() == 1
        page.clock.run_for(1801)
        assert sockets() == 2  # and it fails: nothing listens
        expect(page.locator("#status")).to_contain_text("retrying in 1s")
        page.clock.run_for(799)
        assert sockets() == 2
        page.clock.run_for(401)
        assert sockets() == 3
        expect(page.locator("#status")).to_contain_text("retrying in 2s")
        page.clock.run_for(1599)
        assert sockets() == 3
        restart(gateway)
        post(gateway, room, "while the page was away")
        page.clock.run_for(801)
        assert sockets() == 4
        expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        expect(page.locator(".message .text")).to_have_text(["before the restart", "while the page was away"])
    finally:
        gateway.process.stop()
