"""Where each protocol's scopes go: the per-protocol routers of ``config.asgi``."""

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.urls import path, re_path

from gateway.runtime import Runtime
from gateway.topics import DEVICE_IN_ROUTE, IN_ROUTE
from protocols.mqtt import MqttTopicRouter, topic
from protocols.smtp import EmailToRouter, address

from .email import RoomEmailApplication
from .events import RoomEventsConsumer
from .http import RoomMessagesConsumer
from .mqtt import RoomMqttConsumer
from .websocket import ChatConsumer, RefuseConsumer

# The event stream and the busy message endpoint are served by consumers; everything else goes on to
# Django's views.
http_urlpatterns = [
    path("api/rooms/<room:room>/messages", AuthMiddlewareStack(RoomMessagesConsumer.as_asgi())),
    path("api/rooms/<room:room>/events", AuthMiddlewareStack(RoomEventsConsumer.as_asgi())),
]

websocket_urlpatterns = [
    path("ws/chat/<room:room>/", ChatConsumer.as_asgi()),
    re_path(r"", RefuseConsumer.as_asgi()),
]

# A device on the topic that names it (its broker account may publish nowhere else), anyone on the bare one.
mqtt_router = MqttTopicRouter(
    [
        topic(DEVICE_IN_ROUTE, RoomMqttConsumer.as_asgi()),
        topic(IN_ROUTE, RoomMqttConsumer.as_asgi()),
    ]
)


def email_router(runtime: Runtime) -> EmailToRouter:
    """The rooms' addresses (and secret addresses), whose recipient checks use ``runtime`` (consumers/email.py)."""
    application = RoomEmailApplication(runtime)
    return EmailToRouter(
        [
            address(f"<room:room>@{settings.EMAIL_DOMAIN}", application),
            address(f"<room:room>.<slug:token>@{settings.EMAIL_DOMAIN}", application),  # secret address
        ]
    )
