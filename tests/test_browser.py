"""The room pages in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.support import (
    ROOT,
    Process,
    build_mail,
    http_json,
    launch_gateway,
    manage,
    mqtt_publish,
    smtp_send,
    unique,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking"]
ARGS += ["--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium"):
        pytest.fail("Chromium is needed for the browser tests: apt-get install chromium", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context.new_page()
    context.close()


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


def test_pages_see_each_other_and_every_source(browser, page, gateway):
    room = unique()
    other = browser.new_page()
    open_room(page, gateway, room)
    open_room(other, gateway, room)
    page.locator("#sender-input").fill("alice")
    say(page, "hello from alice")
    expect(other.locator(".message[data-source=websocket]")).to_contain_text("hello from alice")
    expect(page.locator(".message.mine")).to_contain_text("hello from alice")

    mqtt_publish(gateway.mqtt_url, f"rooms/{room}/in", "hello from a device")
    smtp_send(gateway.smtp_port, "bob@example.com", [f"{room}@localhost"], build_mail(room, "Mail", "hello by mail"))
    device = other.locator(".message[data-source=mqtt]")
    mail = other.locator(".message[data-source=email]")
    expect(device).to_contain_text("hello from a device")
    expect(device.locator(".badge")).to_have_text("device")
    expect(mail).to_contain_text("hello by mail")
    expect(mail.locator(".badge")).to_have_text("email")
    expect(other.locator("#presence .presence-browser")).to_have_count(2)
    expect(other.locator("#presence .presence-device")).to_have_text(["device"])
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


def test_reload_shows_history_and_older_pages_load(page, gateway):
    room = unique()
    for n in range(60):
        post(gateway, room, f"message {n}")
    open_room(page, gateway, room)
    expect(page.locator(".message")).to_have_count(50)
    expect(page.locator(".message").last).to_contain_text("message 59")
    page.locator("#load-earlier").click()
    expect(page.locator(".message")).to_have_count(60)
    expect(page.locator(".message").first).to_contain_text("message 0")
    expect(page.locator("#load-earlier")).to_be_hidden()
    page.reload()
    expect(page.locator(".message").last).to_contain_text("message 59")


def test_html_in_messages_is_text_and_links_are_safe(page, gateway):
    room = unique()
    evil = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1"> see https://example.com/a'
    post(gateway, room, evil)
    open_room(page, gateway, room)
    text = page.locator(".message .text")
    expect(text).to_have_text(evil)
    assert page.evaluate("window.__xss") is None
    assert page.locator(".message img, .message script").count() == 0
    link = text.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/a")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")


def test_readings_draw_and_update_a_chart(page, gateway):
    room = unique()
    open_room(page, gateway, room)
    mqtt_publish(gateway.mqtt_url, f"rooms/{room}/in", json.dumps({"temperature": 20.5, "sender": "sensor-1"}))
    expect(page.locator("canvas[data-field=temperature]")).to_be_visible()
    expect(page.locator(".chart-latest[data-field=temperature]")).to_contain_text("temperature: 20.5")
    mqtt_publish(gateway.mqtt_url, f"rooms/{room}/in", json.dumps({"temperature": 22, "sender": "sensor-1"}))
    expect(page.locator(".chart-latest[data-field=temperature]")).to_contain_text("temperature: 22")
    points = page.evaluate("Chart.getChart(document.querySelector('canvas[data-field=temperature]')).data")
    assert points["datasets"][0]["data"] == [20.5, 22]
    expect(page.locator("#presence .presence-device")).to_have_text(["sensor-1"])


def test_restart_reconnects_catches_up_once_and_unsent_messages_retry(page, tmp_path, mosquitto):
    gateway = launch_gateway(tmp_path, mosquitto)
    room = unique()
    try:
        open_room(page, gateway, room)
        post(gateway, room, "before the restart")
        expect(page.locator(".message")).to_have_count(1)
        assert gateway.process.stop() == 0, gateway.process.output
        expect(page.locator("#status")).to_have_attribute("data-state", "disconnected")
        say(page, "typed while offline")
        expect(page.locator(".message.failed")).to_contain_text("typed while offline")

        gateway.process = Process(manage("rungateway"), env=gateway.env).start()
        gateway.process.wait_for("MQTT subscribed")
        post(gateway, room, "while the page was away")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=20_000)
        expect(page.locator(".message:not(.failed) .text")).to_have_text(
            ["before the restart", "while the page was away"]
        )
        page.locator(".message.failed .retry").click()
        expect(page.locator(".message.failed")).to_have_count(0)
        expect(page.locator(".message .text")).to_have_text(
            ["before the restart", "while the page was away", "typed while offline"]
        )
    finally:
        gateway.process.stop()


def test_screenshot_of_a_busy_room(page, gateway):
    room = unique("lobby")
    post(gateway, room, "Welcome! Try posting from a device, a mail client or curl.", "gateway")
    mqtt_publish(gateway.mqtt_url, f"rooms/{room}/in", json.dumps({"message": "door opened", "sender": "hall-sensor"}))
    for value in (20.5, 21.2, 21.9, 21.4):
        mqtt_publish(gateway.mqtt_url, f"rooms/{room}/in", json.dumps({"temperature": value, "sender": "thermo"}))
    smtp_send(gateway.smtp_port, "carol@example.com", [f"{room}@localhost"], build_mail(room, "Lunch", "Noon?"))
    open_room(page, gateway, room)
    page.locator("#sender-input").fill("dave")
    say(page, "Sounds good, see https://example.com/menu")
    expect(page.locator(".message")).to_have_count(8)
    expect(page.locator(".chart-latest[data-field=temperature]")).to_contain_text("21.4")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=artifacts / "room.png")
    assert (artifacts / "room.png").stat().st_size > 10_000


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
