"""The one ASGI application: every protocol routed, and a lifespan answer for any ASGI server."""

from __future__ import annotations

from asgiref.testing import ApplicationCommunicator

from config.asgi import application
from protocols.mqtt import MqttTopicRouter
from protocols.routing import find_router
from protocols.smtp import EmailToRouter


def test_every_protocol_is_routed():
    assert set(application.application_mapping) == {"http", "websocket", "mqtt", "email", "lifespan"}
    assert find_router(application, "mqtt", MqttTopicRouter).subscriptions() == ["rooms/+/in/+", "rooms/+/in"]
    assert find_router(application, "email", EmailToRouter).accepts("lobby@localhost")


async def test_lifespan_startup_and_shutdown():
    communicator = ApplicationCommunicator(application, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await communicator.send_input({"type": "lifespan.startup"})
    assert await communicator.receive_output(5) == {"type": "lifespan.startup.complete"}
    await communicator.send_input({"type": "lifespan.shutdown"})
    assert await communicator.receive_output(5) == {"type": "lifespan.shutdown.complete"}
    await communicator.wait(5)
