"""consumers/lean.py: the one-step WebSocket auth stack is Channels' stack in effect; direct dispatch."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.auth import AuthMiddlewareStack
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings
from django.urls import path, re_path

from consumers.lean import LeanProtocolTypeRouter, LeanURLRouter, WebsocketAuthStack
from consumers.websocket import lasting_scope
from protocols.consumer import DirectDispatch

pytestmark = pytest.mark.django_db(transaction=True)  # dispatch closes old database connections


def scope_of(headers: list[tuple[bytes, bytes]]) -> dict:
    headers = [(b"host", b"example.com"), *headers]  # a page of http://example.com may connect
    scope = {"type": "websocket", "scheme": "ws", "path": "/ws/", "headers": headers}
    return {**scope, "query_string": b"", "subprotocols": []}


async def run(stack_of, headers: list[tuple[bytes, bytes]]) -> tuple[dict | None, dict]:
    """The scope the inner application got (None: it was not called) and the first message sent."""
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope)
        await send({"type": "websocket.close", "code": 4000})

    with override_settings(ALLOWED_HOSTS=["example.com"]):
        stack = stack_of(inner)
    communicator = ApplicationCommunicator(stack, scope_of(headers))
    await communicator.send_input({"type": "websocket.connect"})
    sent = await communicator.receive_output(5)
    await communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await communicator.wait(5)
    return (seen[0] if seen else None), sent


def channels_stack(inner):
    return AllowedHostsOriginValidator(AuthMiddlewareStack(inner))


def summary(scope: dict) -> dict:
    user = scope["user"]
    return {
        "keys": sorted(scope),
        "cookies": scope["cookies"],
        "session_key": scope["session"].session_key,
        "user": (type(user._wrapped).__name__, user.pk, user.is_authenticated),
    }


def session_cookie(user: User) -> bytes:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"theme=dark; sessionid={session.session_key}".encode()


async def test_the_stack_gives_what_channels_stack_gives():
    alice = await User.objects.acreate_user("alice-lean", password="pw")
    cookie = await asyncio.to_thread(session_cookie, alice)
    origin = (b"origin", b"http://example.com")
    cases = {
        "anonymous": [origin],
        "logged in": [origin, (b"cookie", cookie)],
        "stale session": [origin, (b"cookie", b"sessionid=abcdefghijklmnopqrstuvwxyz012345")],
        "bad session key": [origin, (b"cookie", b"sessionid=x")],
    }
    for case, headers in cases.items():
        ours, ours_sent = await run(WebsocketAuthStack, headers)
        theirs, theirs_sent = await run(channels_stack, headers)
        assert summary(ours) == summary(theirs), case
        assert ours_sent == theirs_sent == {"type": "websocket.close", "code": 4000}, case
    assert summary(ours)["user"][0] == "AnonymousUser"
    logged_in, _ = await run(WebsocketAuthStack, cases["logged in"])
    assert logged_in["user"].pk == alice.pk and logged_in["cookies"]["theme"] == "dark"


@pytest.mark.parametrize(
    "headers",
    [[(b"origin", b"http://evil.example")], [], [(b"origin", b"http://example.com.evil")]],
    ids=["other site", "no origin", "lookalike"],
)
async def test_the_stack_refuses_foreign_origins_as_channels_does(headers):
    ours, ours_sent = await run(WebsocketAuthStack, headers)
    theirs, theirs_sent = await run(channels_stack, headers)
    assert ours is None and theirs is None
    assert ours_sent == theirs_sent and ours_sent["type"] == "websocket.close"


@pytest.mark.parametrize(
    "origin",
    [b"http://example.com:8080", b"https://example.com", b"http://example.com/x", b"null"],
    ids=["another port", "another scheme", "not an origin", "opaque"],
)
async def test_the_stack_compares_scheme_host_and_port(origin):
    """Channels' validator compares only the host name: a page on another port would pass it."""
    ours, ours_sent = await run(WebsocketAuthStack, [(b"origin", origin)])
    assert ours is None and ours_sent["type"] == "websocket.close"


async def test_trusted_origins_and_the_tls_proxy_header_are_honoured():
    trusted = [(b"origin", b"https://app.example.net:8443")]
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://app.example.net:8443"]):
        assert (await run(WebsocketAuthStack, trusted))[0] is not None
    assert (await run(WebsocketAuthStack, trusted))[0] is None
    behind_tls = [(b"origin", b"https://example.com"), (b"x-forwarded-proto", b"https")]
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert (await run(WebsocketAuthStack, behind_tls))[0] is not None
    assert (await run(WebsocketAuthStack, behind_tls))[0] is None


async def test_the_stack_is_for_websockets_only():
    with pytest.raises(ValueError, match="non-WebSocket"):
        await WebsocketAuthStack(None)({"type": "http", "headers": []}, None, None)


class Recorder(DirectDispatch, AsyncWebsocketConsumer):
    channel_layer_alias = None
    events: list

    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        self.events.append(text_data)
        if text_data == "stop":
            raise StopConsumer


async def test_direct_dispatch_in_order_in_one_task():
    Recorder.events = []
    communicator = ApplicationCommunicator(Recorder.as_asgi(), scope_of([]))
    await communicator.send_input({"type": "websocket.connect"})
    assert await communicator.receive_output(5) == {"type": "websocket.accept", "subprotocol": None}
    before = len(asyncio.all_tasks())
    for number in range(5):
        await communicator.send_input({"type": "websocket.receive", "text": str(number)})
    await asyncio.sleep(0.05)
    assert Recorder.events == ["0", "1", "2", "3", "4"]
    assert len(asyncio.all_tasks()) == before  # no task per receive
    await communicator.send_input({"type": "websocket.receive", "text": "stop"})
    await communicator.wait(5)  # StopConsumer ends the application
    assert Recorder.events[-1] == "stop"


class LayerRecorder(DirectDispatch, AsyncWebsocketConsumer):
    """With a channel layer, the consumer runs as Channels runs it: it has a channel of its own."""

    async def connect(self):
        await self.accept()
        await self.send(text_data=self.channel_name)


async def test_direct_dispatch_leaves_consumers_with_a_layer_alone():
    communicator = ApplicationCommunicator(LayerRecorder.as_asgi(), scope_of([]))
    await communicator.send_input({"type": "websocket.connect"})
    assert (await communicator.receive_output(5))["type"] == "websocket.accept"
    assert (await communicator.receive_output(5))["text"].startswith("specific.")
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(5)


class Holder(DirectDispatch, AsyncWebsocketConsumer):
    """Accepts, tells what it got from the routers, then idles until the client goes."""

    channel_layer_alias = None

    async def connect(self):
        await self.accept()
        route = self.scope["url_route"]
        await self.send(text_data=f"{route['kwargs']} {self.scope['path_remaining']!r} {self.scope['user']}")


def lean_application(inner=None):
    """config.asgi's shape: the lean routers and stack around a consumer."""
    with override_settings(ALLOWED_HOSTS=["example.com"]):
        websocket = WebsocketAuthStack(
            inner or LeanURLRouter([path("ws/<slug:room>/", Holder.as_asgi()), re_path(r"", Holder.as_asgi())])
        )
    return LeanProtocolTypeRouter({"websocket": websocket})


def suspended_in(task: asyncio.Future) -> list[str]:
    """The coroutines a task is suspended in, outermost first."""
    names, awaited = [], task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        names.append(awaited.cr_code.co_qualname)
        awaited = awaited.cr_await
    return names


@pytest.mark.parametrize("cookie", [False, True], ids=["anonymous", "stale session"])
async def test_an_idle_connection_is_suspended_in_its_consumer_alone(cookie):
    """The routers and the stack hand over to the consumer: the connection's task runs the consumer's
    own coroutine, not a chain of frames each holding a scope (consumers/lean.py). With a session
    cookie the stack must wait for the user first, and keeps one frame."""
    headers = [(b"origin", b"http://example.com")]
    if cookie:
        headers.append((b"cookie", b"sessionid=abcdefghijklmnopqrstuvwxyz012345"))
    communicator = ApplicationCommunicator(lean_application(), {**scope_of(headers), "path": "/ws/lobby/"})
    await communicator.send_input({"type": "websocket.connect"})
    assert await communicator.receive_output(5) == {"type": "websocket.accept", "subprotocol": None}
    assert (await communicator.receive_output(5))["text"] == "{'room': 'lobby'} '' AnonymousUser"
    above = ["WebsocketAuthStack._after_user"] if cookie else []
    chain = suspended_in(communicator.future)
    assert chain[: len(above) + 1] == [*above, "DirectDispatch.__call__"]
    assert chain[len(above) + 1 :] == ["Queue.get"]  # waiting for its next event, nothing else
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(5)


async def test_the_lean_url_router_routes_as_channels_does():
    """Nested routers, a root path, path converters and default kwargs: the same scope as URLRouter's."""
    seen = []

    async def inner(scope, receive, send):
        seen.append((scope["path_remaining"], scope["url_route"]))

    def routes(router):
        nested = router([path("chat/<slug:room>/", inner, {"kind": "chat"})])
        return router([path("ws/<int:version>/", nested), re_path(r"^other/(\w+)/$", inner)])

    for scope in (
        {"type": "websocket", "path": "/ws/2/chat/lobby/"},
        {"type": "websocket", "path": "/app/ws/3/chat/x/", "root_path": "/app"},
        {"type": "websocket", "path": "/other/thing/"},
    ):
        for router in (LeanURLRouter, URLRouter):
            await routes(router)(dict(scope), None, None)
        assert seen[-1] == seen[-2], scope
    assert seen[0] == ("", {"args": (), "kwargs": {"version": 2, "room": "lobby", "kind": "chat"}})
    for router in (LeanURLRouter, URLRouter):
        with pytest.raises(ValueError, match="No route found"):
            await routes(router)({"type": "websocket", "path": "/nowhere/"}, None, None)


async def test_a_failure_while_routing_is_raised_in_the_connections_task():
    """What the lean routers do when called still fails where Channels' routers fail: in the awaited
    application (the server's task for the connection), not in the server's call."""

    def broken(scope, receive, send):
        raise RuntimeError("broken application")

    application = LeanProtocolTypeRouter({"websocket": broken})
    started = application({"type": "websocket"}, None, None)  # does not raise here
    with pytest.raises(RuntimeError, match="broken application"):
        await started
    with pytest.raises(ValueError, match="No application configured for scope type 'mqtt'"):
        await application({"type": "mqtt"}, None, None)


def test_the_lean_applications_are_asgi_3():
    """Servers tell ASGI 3 from ASGI 2 by a coroutine-function ``__call__`` (asgiref's compatibility)."""
    from asgiref.compatibility import is_double_callable

    application = lean_application()
    for app in (application, application.application_mapping["websocket"], Holder.as_asgi(), LeanURLRouter([])):
        assert not is_double_callable(app), app
    assert Holder.as_asgi().consumer_class is Holder


def test_a_joined_connection_keeps_only_its_scopes_type_and_path():
    scope = {**scope_of([(b"cookie", b"sessionid=x")]), "url_route": {"kwargs": {"room": "r"}}, "user": object()}
    assert lasting_scope(scope) == {"type": "websocket", "path": "/ws/"}
