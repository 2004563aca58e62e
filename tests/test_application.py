"""The one ASGI application: every protocol routed, and a lifespan answer for any ASGI server."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator

from config.asgi import build_application
from gateway.runtime import Runtime, WithRuntime, runtime_of
from protocols.mqtt import MqttTopicRouter
from protocols.routing import find_router
from protocols.smtp import EmailToRouter


def test_every_protocol_is_routed():
    application = build_application(Runtime())
    assert set(application.inner.application_mapping) == {"http", "websocket", "mqtt", "email", "lifespan"}
    assert find_router(application, "mqtt", MqttTopicRouter).subscriptions() == ["rooms/+/in/+", "rooms/+/in"]
    assert find_router(application, "email", EmailToRouter).accepts("lobby@localhost")


async def test_every_scope_carries_the_application_s_runtime(runtime):
    seen = []

    async def inner(scope, receive, send) -> None:
        seen.append(runtime_of(scope))

    server_scope = {"type": "http"}
    await WithRuntime(inner, runtime)(server_scope, None, None)
    assert seen == [runtime] and server_scope == {"type": "http"}  # the server's scope is left as it was
    with pytest.raises(LookupError, match="no runtime in the scope"):
        runtime_of(server_scope)


async def test_lifespan_startup_and_shutdown(runtime):
    application = build_application(runtime)
    communicator = ApplicationCommunicator(application, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await communicator.send_input({"type": "lifespan.startup"})
    assert await communicator.receive_output(5) == {"type": "lifespan.startup.complete"}
    await communicator.send_input({"type": "lifespan.shutdown"})
    assert await communicator.receive_output(5) == {"type": "lifespan.shutdown.complete"}
    await communicator.wait(5)
