"""The topic and address routers: matching, captures, converters, nesting, subscriptions."""

from __future__ import annotations

import pytest
from channels.middleware import BaseMiddleware
from channels.routing import ProtocolTypeRouter
from django.core.exceptions import ImproperlyConfigured

from protocols.mqtt import MqttTopicRouter, topic
from protocols.routing import find_router
from protocols.smtp import EmailToRouter, address


def app(name: str):
    async def application(scope, receive, send):
        await send({"app": name, "scope": scope})

    application.name = name
    return application


async def call(router, scope: dict) -> dict:
    sent = []

    async def send(event):
        sent.append(event)

    await router(scope, None, send)
    return sent[0]


def test_topic_captures_and_converters():
    router = MqttTopicRouter(
        [
            topic("rooms/<room:room>/in", app("room")),
            topic("devices/<int:device>/status", app("status")),
            topic("logs/<path:rest>", app("logs")),
        ]
    )
    assert router.resolve("rooms/lobby/in")[1] == {"room": "lobby"}
    assert router.resolve("devices/42/status")[1] == {"device": 42}
    assert router.resolve("logs/a/b/c")[1] == {"rest": "a/b/c"}
    assert router.resolve("rooms/bad.room/in") is None  # the room converter refuses it
    assert router.resolve("rooms/" + "x" * 65 + "/in") is None
    assert router.resolve("rooms/lobby/in/extra") is None
    assert router.resolve("devices/abc/status") is None
    assert router.subscriptions() == ["rooms/+/in", "devices/+/status", "logs/#"]


def test_nested_topic_routers_merge_captures_and_filters():
    inner = MqttTopicRouter([topic("in", app("in")), topic("cmd/<name>", app("cmd"))])
    router = MqttTopicRouter([topic("rooms/<room:room>/", inner), topic("rooms/<room:room>/in", app("never"))])
    application, kwargs = router.resolve("rooms/lobby/cmd/reset")
    assert application.name == "cmd" and kwargs == {"room": "lobby", "name": "reset"}
    assert router.resolve("rooms/lobby/in")[0].name == "in"
    assert router.subscriptions() == ["rooms/+/in", "rooms/+/cmd/+"]


async def test_router_puts_captures_in_the_scope():
    router = MqttTopicRouter([topic("rooms/<room:room>/in", app("room"))])
    sent = await call(router, {"type": "mqtt", "topic": "rooms/lobby/in"})
    assert sent["app"] == "room" and sent["scope"]["route"] == {"kwargs": {"room": "lobby"}}
    with pytest.raises(ValueError, match="No route found for topic"):
        await call(router, {"type": "mqtt", "topic": "elsewhere"})


def test_unknown_converter_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="unknown converter 'nope'"):
        topic("rooms/<nope:room>/in", app("x"))


async def test_address_router_domain_is_case_insensitive_local_part_exact():
    router = EmailToRouter([address("<room:room>@chat.example.com", app("room"))])
    assert router.accepts("lobby@chat.example.com")
    assert router.accepts("Lobby@CHAT.Example.COM")
    assert router.resolve("Lobby@CHAT.Example.COM")[1] == {"room": "Lobby"}
    assert not router.accepts("lobby@example.com")
    assert not router.accepts("bad.room@chat.example.com")
    assert not router.accepts("no-at-sign")
    sent = await call(router, {"type": "email", "rcpt_to": "lobby@Chat.Example.com"})
    assert sent["scope"]["route"] == {"kwargs": {"room": "lobby"}}


def test_find_router_looks_through_protocol_router_and_middleware():
    mqtt = MqttTopicRouter([topic("a/<x>", app("a"))])
    email = EmailToRouter([address("<x>@example.com", app("b"))])
    application = ProtocolTypeRouter({"mqtt": BaseMiddleware(mqtt), "email": email, "http": app("http")})
    assert find_router(application, "mqtt", MqttTopicRouter) is mqtt
    assert find_router(application, "email", EmailToRouter) is email
    assert find_router(application, "websocket", MqttTopicRouter) is None
    assert find_router(app("plain"), "mqtt", MqttTopicRouter) is None


def test_answers_are_remembered_per_value_and_cannot_be_spoiled(monkeypatch):
    router = MqttTopicRouter([topic("devices/<int:device>/status", app("status"))])
    matched: list[str] = []
    match = router._match
    monkeypatch.setattr(router, "_match", lambda value: matched.append(value) or match(value))
    application, kwargs = router.resolve("devices/7/status")
    kwargs["device"] = 8  # a caller's copy
    assert router.resolve("devices/7/status")[1] == {"device": 7}
    assert router.resolve("devices/x/status") is None and router.resolve("devices/x/status") is None
    assert matched == ["devices/7/status", "devices/x/status"]  # each value matched once
    monkeypatch.setattr(router, "CACHE_SIZE", 2)
    router.resolve("devices/9/status")  # a third value: the memory starts again
    assert router.resolve("devices/7/status")[1] == {"device": 7}
    assert matched == ["devices/7/status", "devices/x/status", "devices/9/status", "devices/7/status"]
