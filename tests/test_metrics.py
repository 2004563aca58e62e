"""/metrics: what a process did, in Prometheus's format."""

from __future__ import annotations

import re

from gateway.topics import in_topic
from tests.support import ahttp, apublish, join, receive, unique


async def scrape(gateway) -> dict[str, float]:
    status, text = await ahttp("GET", f"{gateway.http}/metrics")
    assert status == 200
    samples = re.findall(r"^(gateway_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in samples}


async def test_metrics_count_messages_deliveries_rejects_and_connections(gateway):
    room = unique()
    before = await scrape(gateway)
    ws, _ = await join(gateway, room)
    await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": "counted"})
    await receive(ws)
    await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": ""})  # refused: 400
    await apublish(gateway.mqtt_url, in_topic(room), b"[1]")  # refused: not an object
    await apublish(gateway.mqtt_url, in_topic(room), "also counted")
    await receive(ws)
    after = await scrape(gateway)

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('gateway_messages_in_total{source="http"}') == 1
    assert grew('gateway_messages_in_total{source="mqtt"}') == 1
    assert grew('gateway_deliveries_total{protocol="websocket"}') >= 2
    assert grew('gateway_rejects_total{protocol="http"}') == 1
    assert grew('gateway_rejects_total{protocol="mqtt"}') == 1
    assert after['gateway_connections{protocol="websocket"}'] >= 1
    assert grew("gateway_fanout_seconds_count") >= 2
    await ws.close()
