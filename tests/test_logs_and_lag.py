"""Outside input cannot forge log lines, and /healthz and /metrics tell how late the event loop runs."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway import health, loop_lag
from gateway.logs import SafeFormatter
from tests.support import ahttp, asmtp, unique

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatted(message: str, *args, exc_info=None) -> str:
    record = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, message, args, exc_info)
    return SafeFormatter(FORMAT).format(record)


def test_control_characters_from_outside_are_escaped():
    line = formatted("Rejected MQTT message on %s: %s", "rooms/a\nFORGED INFO x: y/in", "bad\r\x1b[31m\u2028end")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith(r"Rejected MQTT message on rooms/a\nFORGED INFO x: y/in: bad\r\x1b[31m\u2028end")


def test_a_traceback_quoting_outside_input_stays_under_its_record():
    try:
        raise ValueError("no room 'x\nFORGED ERROR line'")
    except ValueError as exc:
        text = formatted("Failed on %s", "a\nb", exc_info=(type(exc), exc, exc.__traceback__))
    first, *rest = text.split("\n")
    assert first.endswith(r"Failed on a\nb")
    assert rest and all(line.startswith("    ") for line in rest), text  # nothing starts a record of its own
    assert any("FORGED ERROR line" in line for line in rest)


async def test_a_folded_header_is_logged_on_one_line(gateway):
    """A mail's header quoted in the log (here, why an auto-reply is not posted) cannot start a line."""
    marker, room = unique("forged"), unique()
    folded = f"auto-replied\r\n\t{marker} ERROR gateway: all is lost"  # a header folded onto a second line
    mail = f"Subject: away\r\nAuto-Submitted: {folded}\r\n\r\nBody"
    await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], mail)
    gateway.process.wait_for(marker, timeout=10)
    assert [line for line in gateway.process.lines if marker in line] == [
        line
        for line in gateway.process.lines
        if marker in line and line.startswith("20")  # a time stamp
    ]


async def test_healthz_and_metrics_report_the_loop_lag(gateway):
    status, body = await ahttp("GET", f"{gateway.http}/healthz")
    assert status == 200 and body["components"]["event_loop"]["ok"] is True, body
    status, text = await ahttp("GET", f"{gateway.http}/metrics")
    assert status == 200 and "gateway_event_loop_lag_seconds " in text


async def test_a_blocked_loop_makes_health_degraded(settings, runtime):
    settings.LOOP_LAG_LIMIT = 0.2
    runtime.start()
    watch = runtime.loop_lag
    await asyncio.sleep(0)  # let the watch take its first timestamp before the loop is held up
    time.sleep(0.5)  # a handler that holds the loop up (what a parser without a budget does)
    async with asyncio.timeout(5):
        while watch.recent < 0.2:
            await asyncio.sleep(loop_lag.INTERVAL)  # the watch's next look
    assert health._event_loop(runtime)["ok"] is False
