"""The production profile (``DEBUG`` off) refuses insecure settings, saying what to fix.

Django runs these checks before every management command (``rungateway``, ``runmqtt``,
``runsmtp``, ``migrate``); ``config.asgi`` runs them too, so plain daphne refuses as well.
A deployment that has weighed one of them (a broker reached only over a private container network,
say) acknowledges it by id in ``SILENCED_SYSTEM_CHECKS``, Django's own way.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.checks import Error, register
from django.core.checks.security.base import SECRET_KEY_MIN_LENGTH, SECRET_KEY_MIN_UNIQUE_CHARACTERS

DEVELOPMENT_SECRET_KEY = "dev-insecure-only-for-make-run"  # noqa: S105 (the known key this check refuses)


def _is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def weak_secret_key(key: str) -> bool:
    """Django's own rule (security.W009): at least 50 characters, at least 5 different ones."""
    return (
        key == DEVELOPMENT_SECRET_KEY
        or key.startswith("django-insecure-")
        or len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
    )


def public_suffix_wildcards(hosts: list[str]) -> list[str]:
    """``ALLOWED_HOSTS`` entries like ``.com`` or ``.co.uk``: every site under a public suffix."""
    wildcards = [host for host in hosts if host.startswith(".")]
    if not wildcards:
        return []
    from publicsuffixlist import PublicSuffixList  # the list ships with the package: no network

    suffixes = PublicSuffixList()
    return [host for host in wildcards if host == "." or suffixes.is_public(host.lstrip(".").rstrip(".").lower())]


def plain_password_to_another_host(url: SplitResult, plain: str) -> bool:
    """A password that would cross the network in clear: scheme ``plain``, a host not on this machine."""
    return bool(url.password) and url.scheme == plain and not _is_loopback(url.hostname)


def redis_urls() -> list[SplitResult]:
    return [urlsplit(url.strip()) for url in settings.REDIS_URL.split(",") if url.strip()]


@register("gateway")
def production_settings(app_configs, **kwargs) -> list[Error]:
    if settings.DEBUG:
        return []  # the development profile: open rooms, the quick start works
    errors = []
    if weak_secret_key(settings.SECRET_KEY):
        errors.append(
            Error(
                f"SECRET_KEY is the development key, shorter than {SECRET_KEY_MIN_LENGTH} characters "
                f"or made of fewer than {SECRET_KEY_MIN_UNIQUE_CHARACTERS} different characters.",
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
    broker = urlsplit(settings.MQTT_URL)
    if not broker.username:
        errors.append(
            Error(
                f"MQTT_URL connects anonymously to {broker.hostname}: anyone who reaches that broker "
                "hears rooms/<room>/out and may post into rooms/<room>/in/<device> as any device.",
                hint="Give the adapter its own broker account, and close the broker to anonymous clients: "
                "mqtt://user:password@host:port (mqtts:// for TLS); see docs/security.md, 'MQTT devices'.",
                id="gateway.E003",
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
    if settings.ROOMS_AUTO_CREATE:
        errors.append(
            Error(
                "ROOMS_AUTO_CREATE is on: anyone who may post would create rooms by naming them.",
                hint="Unset ROOMS_AUTO_CREATE; make rooms in the admin or with manage.py addroom.",
                id="gateway.E005",
            )
        )
    for host in public_suffix_wildcards(settings.ALLOWED_HOSTS):
        errors.append(
            Error(
                f"ALLOWED_HOSTS has {host!r}, which matches every site under a public suffix.",
                hint="Name the gateway's own host names (chat.example.com), or a domain you own (.example.com).",
                id="gateway.E006",
            )
        )
    if plain_password_to_another_host(broker, "mqtt"):
        errors.append(
            Error(
                f"MQTT_URL sends its password in clear (mqtt://) to {broker.hostname}, which is not on this machine.",
                hint="Use mqtts://user:password@host:8883 (the broker's TLS listener).",
                id="gateway.E007",
            )
        )
    for redis in redis_urls():
        if plain_password_to_another_host(redis, "redis") or (
            settings.REDIS_SENTINELS and redis.password and redis.scheme == "redis"
        ):
            errors.append(
                Error(
                    f"REDIS_URL sends a password in clear (redis://) to {redis.hostname}, "
                    "which is not on this machine (or is a master found through Sentinel).",
                    hint="Use rediss:// (Redis with TLS).",
                    id="gateway.E008",
                )
            )
    return errors
