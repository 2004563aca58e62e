"""The one ASGI application: HTTP, WebSocket, MQTT and email scopes, each to its router."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # sets Django up before the consumers are imported

from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

# Under any ASGI server, refuse to serve with settings the production profile forbids.
_refused = [
    message for message in checks.run_checks(tags=["gateway"]) if message.is_serious() and not message.is_silenced()
]
if _refused:
    raise ImproperlyConfigured("\n".join(f"{m.id}: {m.msg} {m.hint}" for m in _refused))

from typing import Any  # noqa: E402

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import re_path  # noqa: E402

from consumers.lean import LeanProtocolTypeRouter, LeanURLRouter, WebsocketAuthStack  # noqa: E402
from consumers.routing import email_router, http_urlpatterns, mqtt_router, websocket_urlpatterns  # noqa: E402
from gateway.runtime import Runtime, WithRuntime  # noqa: E402
from protocols.lifespan import lifespan  # noqa: E402


def build_application(runtime: Runtime) -> WithRuntime:
    """The application, serving with ``runtime``: every scope it is given carries it (``scope["runtime"]``,
    read once per connection by the consumers, and by Django views as ``request.scope["runtime"]``).

    The Lean routers are Channels' ProtocolTypeRouter and URLRouter, handing over to the application
    they choose instead of awaiting it: a long-lived connection keeps no frame of theirs (consumers/lean.py)."""
    router = LeanProtocolTypeRouter(
        {
            "http": LeanURLRouter(
                [
                    *http_urlpatterns,
                    re_path(r"", ASGIStaticFilesHandler(django_http) if settings.DEBUG else django_http),
                ]
            ),
            # Browsers' cross-site WebSockets are refused (Origin must be in ALLOWED_HOSTS); sessions give users
            # (AllowedHostsOriginValidator and AuthMiddlewareStack, in one frame: consumers/lean.py).
            "websocket": WebsocketAuthStack(LeanURLRouter(websocket_urlpatterns)),
            "mqtt": mqtt_router,
            "email": email_router(runtime),
            "lifespan": lifespan,
        }
    )
    return WithRuntime(router, runtime)


def __getattr__(name: str) -> Any:
    """``config.asgi:application`` for an ASGI server (daphne, ``python -m gateway.serve``), built on first
    use around a runtime of its own: the process's. The gateway's commands build theirs instead."""
    if name != "application":
        raise AttributeError(name)
    global application
    application = build_application(Runtime())
    return application
