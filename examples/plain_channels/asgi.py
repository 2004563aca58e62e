"""A plain Channels app with MQTT and email added, through channels-protocols alone (run.py serves it)."""

from channels.routing import ProtocolTypeRouter

from protocols.mqtt import AsyncMqttConsumer, MqttTopicRouter, topic
from protocols.smtp import AsyncEmailConsumer, EmailToRouter, address


class Sensor(AsyncMqttConsumer):
    async def receive(self, payload: bytes) -> None:
        print(f"mqtt {self.scope['route']['kwargs']['name']}: {payload.decode()}", flush=True)
        await self.ack()


class Inbox(AsyncEmailConsumer):
    async def receive(self, content: bytes) -> None:
        print(f"mail for {self.scope['route']['kwargs']['box']}: {len(content)} bytes", flush=True)
        await self.accept()


application = ProtocolTypeRouter(
    {
        "mqtt": MqttTopicRouter([topic("sensors/<slug:name>", Sensor.as_asgi())]),
        "email": EmailToRouter([address("<slug:box>@example.com", Inbox.as_asgi())]),
    }
)
