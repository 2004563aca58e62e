"""The production profile (``DEBUG`` off) refuses insecure settings, saying what to fix.

Django runs these checks before every management command (``rungateway``, ``runmqtt``,
``runsmtp``, ``migrate``); ``config.asgi`` runs them too, so plain daphne refuses as well.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

DEVELOPMENT_SECRET_KEY = "dev-insecure-only-for-make-run"


def _is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register("gateway")
def production_settings(app_configs, **kwargs) -> list[Error]:
    if settings.DEBUG:
        return []  # the development profile: open rooms, the quick start works
    errors = []
    if settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(settings.SECRET_KEY) < 32:
        errors.append(
            Error(
                "SECRET_KEY is the development key or shorter than 32 characters.",
                hint="Set SECRET_KEY to a long random value, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
                id="gateway.E001",
            )
        )
    if not settings.ALLOWED_HOSTS or "*" in settings.ALLOWED_HOSTS:
        errors.append(
            Error(
                "ALLOWED_HOSTS is empty or '*'.",
                hint="Set ALLOWED_HOSTS to the host names the gateway is reached by (comma-separated).",
                id="gateway.E002",
            )
        )
    if settings.ROOMS_OPEN:
        errors.append(
            Error(
                "ROOMS_OPEN is on: new rooms would take anyone's posts and anyone's mail at <room>@domain.",
                hint="Unset ROOMS_OPEN; open single rooms on purpose in the admin (public, email open).",
                id="gateway.E004",
            )
        )
    broker = urlsplit(settings.MQTT_URL)
    if not broker.username and not _is_loopback(broker.hostname):
        errors.append(
            Error(
                f"MQTT_URL connects anonymously to {broker.hostname}, which is not on this machine.",
                hint="Give the adapter its own broker account: mqtt://user:password@host:port (mqtts:// for TLS).",
                id="gateway.E003",
            )
        )
    return errors
