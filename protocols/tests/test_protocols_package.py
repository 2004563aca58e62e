"""channels-protocols on its own: routing, an SMTP client answered by an ASGI app, an MQTT message served
by an ASGI app through a real broker (and the app's publication back out through it)."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

import paho.mqtt.client as paho
import pytest
from channels.routing import ProtocolTypeRouter

from protocols.mqtt import AsyncMqttConsumer, MqttServer, MqttTopicRouter, topic
from protocols.smtp import AsyncEmailConsumer, EmailToRouter, SmtpServer, address


def test_routers_resolve_and_subscribe() -> None:
    mqtt = MqttTopicRouter([topic("rooms/<slug:room>/in", AsyncMqttConsumer.as_asgi())])
    assert mqtt.subscriptions() == ["rooms/+/in"]
    assert mqtt.resolve("rooms/kitchen/in") == (mqtt.routes[0].application, {"room": "kitchen"})
    assert mqtt.resolve("rooms/kitchen/out") is None
    email = EmailToRouter([address("<slug:room>@rooms.example", AsyncEmailConsumer.as_asgi())])
    assert email.accepts("Kitchen@Rooms.Example")
    assert not email.accepts("kitchen@elsewhere.example")


class Mailbox(AsyncEmailConsumer):
    received: list[tuple[str, bytes]] = []

    async def receive(self, content: bytes) -> None:
        self.received.append((self.scope["route"]["kwargs"]["room"], content))
        await self.accept()


@pytest.mark.asyncio
async def test_smtp_server_answers_with_the_application(smtp_port: int) -> None:
    application = ProtocolTypeRouter(
        {"email": EmailToRouter([address("<slug:room>@rooms.example", Mailbox.as_asgi())])}
    )
    server = SmtpServer(application, port=smtp_port)
    await server.start()
    try:

        def send() -> tuple[dict, dict]:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
                accepted = client.sendmail("a@example.com", ["kitchen@rooms.example"], b"Subject: hi\r\n\r\nhello\r\n")
                try:
                    client.sendmail("a@example.com", ["kitchen@elsewhere.example"], b"\r\n")
                    refused: dict = {}
                except smtplib.SMTPRecipientsRefused as error:
                    refused = error.recipients
            return accepted, refused

        accepted, refused = await asyncio.to_thread(send)
    finally:
        await server.stop()
    assert accepted == {}  # every recipient took it: 250
    assert Mailbox.received[-1][0] == "kitchen" and b"hello" in Mailbox.received[-1][1]
    assert refused["kitchen@elsewhere.example"][0] == 550


class Echo(AsyncMqttConsumer):
    async def receive(self, payload: bytes) -> None:
        await self.publish(f"rooms/{self.scope['route']['kwargs']['room']}/out", payload.upper(), qos=1)
        await self.ack()


@pytest.mark.asyncio
async def test_mqtt_server_serves_the_application(broker: str) -> None:
    application = ProtocolTypeRouter({"mqtt": MqttTopicRouter([topic("rooms/<slug:room>/in", Echo.as_asgi())])})
    server = MqttServer(application, broker, publish_group=None)
    await server.start()
    heard: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    subscribed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        loop.call_soon_threadsafe(heard.put_nowait, (message.topic, bytes(message.payload)))

    def on_subscribe(*args: Any) -> None:
        loop.call_soon_threadsafe(subscribed.set)

    port = int(broker.rsplit(":", 1)[1])
    listener = paho.Client(paho.CallbackAPIVersion.VERSION2)
    listener.on_message = on_message
    listener.on_subscribe = on_subscribe
    listener.connect("127.0.0.1", port)
    listener.subscribe("rooms/+/out", qos=1)
    listener.loop_start()
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        await server.wait_ready(10)
        listener.publish("rooms/kitchen/in", b"hello", qos=1)
        assert await asyncio.wait_for(heard.get(), 10) == ("rooms/kitchen/out", b"HELLO")
    finally:
        listener.loop_stop()
        listener.disconnect()
        await server.stop()
