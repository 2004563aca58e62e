"""``rungateway`` starts an embedded (amqtt) broker at MQTT_URL when none answers there, and only then."""

from __future__ import annotations

import json

from gateway.topics import in_topic, out_topic
from tests.support import MqttListener, Process, apublish, free_port, history, join, launch_gateway, receive, unique


def mqtt_banner_line(process: Process) -> str:
    """The banner's MQTT line. The banner is printed after the adapters start, which may come after
    "MQTT subscribed" (what ``launch_gateway`` waits for): wait for its last line first."""
    process.wait_for("Quit with Ctrl-C.")
    [line] = [line for line in process.lines if line.startswith("  MQTT ")]
    return line


async def test_embedded_broker_when_none_answers(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = launch_gateway(tmp_path, url)
    process = gateway.process
    try:
        line = mqtt_banner_line(process)
        assert url in line and "embedded" in line, line

        room = unique()
        ws, _ = await join(gateway, room)
        listener = MqttListener(url, out_topic(room))
        try:
            await apublish(url, in_topic(room), "through the embedded broker")
            event = await receive(ws)
            [published] = listener.wait(1)
        finally:
            listener.close()
        assert (event["room"], event["message"], event["source"]) == (room, "through the embedded broker", "mqtt")
        assert json.loads(published.payload) == event  # the adapter publishes back through it as well
        assert await history(gateway, room) == [event]
        await ws.close()
    finally:
        code = process.stop()
    assert code == 0, process.output


def test_no_embedded_broker_when_mosquitto_answers(gateway):
    line = mqtt_banner_line(gateway.process)
    assert gateway.mqtt_url in line and "(broker)" in line, line
    assert "embedded" not in gateway.process.output
