"""examples/plain_channels: a plain Channels app that adds MQTT and email with channels-protocols alone,
run as its README says, against a throwaway Mosquitto and a real SMTP client."""

from __future__ import annotations

import os
import smtplib

import paho.mqtt.client as paho

from .support import PYTHON, ROOT, Mosquitto, Process, free_port


def test_the_example_hears_a_device_and_takes_a_mail() -> None:
    broker = Mosquitto().start()
    smtp_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # its own settings, not the gateway's
    example = Process([PYTHON, "examples/plain_channels/run.py", broker.url, str(smtp_port)], env=env).start()
    try:
        example.wait_for("ready")
        device = paho.Client(paho.CallbackAPIVersion.VERSION2)
        device.connect("127.0.0.1", broker.port)
        device.loop_start()
        device.publish("sensors/kitchen", b"21.5", qos=1).wait_for_publish(10)
        device.loop_stop()
        device.disconnect()
        example.wait_for("mqtt kitchen: 21.5")

        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail("me@example.org")
            assert client.rcpt("inbox@example.com")[0] == 250
            assert client.rcpt("inbox@elsewhere.example")[0] == 550  # no route: refused at once
            assert client.data(b"Subject: Hi\r\n\r\nhello\r\n")[0] == 250
        example.wait_for("mail for inbox:")
    finally:
        example.stop()
        broker.kill()
