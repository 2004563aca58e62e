"""Serve asgi.application's MQTT and email: python run.py [mqtt://host:1883] [smtp port, 2525]."""

import asyncio
import os
import sys

import django


async def main(broker: str, smtp_port: int) -> None:
    from asgi import application

    from protocols.mqtt import MqttServer
    from protocols.smtp import SmtpServer

    mqtt, smtp = MqttServer(application, broker), SmtpServer(application, port=smtp_port)
    await smtp.start()
    await mqtt.start()
    await mqtt.wait_ready(30)
    print("ready", flush=True)
    try:
        await asyncio.Future()  # until Ctrl-C
    finally:
        await mqtt.stop()
        await smtp.stop()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    django.setup()
    broker = sys.argv[1] if len(sys.argv) > 1 else "mqtt://127.0.0.1:1883"
    asyncio.run(main(broker, int(sys.argv[2]) if len(sys.argv) > 2 else 2525))
