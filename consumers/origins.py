"""Where an HTTP request comes from: its ``Host`` (``ALLOWED_HOSTS``) and, for writes made with the
session cookie, its page's origin or Django's CSRF token (docs/security.md, "Cross-site posts")."""

from __future__ import annotations

import io
import logging

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.http.request import split_domain_port, validate_host
from django.middleware.csrf import CsrfViewMiddleware

from .lean import origin_of  # the same-origin rule of WebSocket handshakes

logger = logging.getLogger(__name__)

WRONG_HOST_ERROR = "the Host header is not one of ALLOWED_HOSTS"
CROSS_SITE_ERROR = (
    "a post with the session cookie must come from the gateway's own pages (Origin) or carry the CSRF token"
    " (X-CSRFToken, the csrftoken cookie's value)"
)


def allowed_host(scope: dict) -> bool:
    """The request's ``Host`` is one of ``ALLOWED_HOSTS``."""
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def cross_site_refusal(scope: dict, body: bytes) -> str | None:
    """Why a write authenticated by the session cookie is refused as possibly forged by another site,
    or None. Checked only when the session, not an ``Authorization`` header, names the user: a page of
    another origin can make a browser send the cookie (SameSite=Lax lets a page on another port of the
    same host do it), never a header of its choosing without CORS, which the gateway does not grant.

    With an ``Origin`` header (browsers send one on every POST) it must be the request's own origin,
    scheme, host and port (``request.scheme`` honours ``SECURE_PROXY_SSL_HEADER``), or one of
    ``CSRF_TRUSTED_ORIGINS``. Without one, Django's ``CsrfViewMiddleware`` decides through its public
    ``process_request``/``process_view``: the ``X-CSRFToken`` header must match the csrftoken cookie (and,
    over HTTPS, the ``Referer`` must be the gateway's own)."""
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    request = ASGIRequest(scope, io.BytesIO(body))
    origin = request.headers.get("Origin")
    if origin is not None:
        own = origin_of(f"{request.scheme}://{request.get_host()}")
        trusted = {origin_of(url) for url in settings.CSRF_TRUSTED_ORIGINS}
        if origin_of(origin) in ({own} | trusted) - {None}:
            return None
        logger.warning("Refused a post with the session cookie from another origin, %r, to %s", origin, request.path)
        return CROSS_SITE_ERROR
    middleware = CsrfViewMiddleware(_never_called)
    try:
        middleware.process_request(request)
        if middleware.process_view(request, _never_called, (), {}) is None:
            return None
    except (MultiPartParserError, SuspiciousOperation):  # it reads a form body for the token: this one is broken
        pass
    logger.warning("Refused a post with the session cookie, no Origin and no valid CSRF token, to %s", request.path)
    return CROSS_SITE_ERROR


def _never_called(request: HttpRequest) -> HttpResponse:
    """The view the CSRF middleware is asked about: only its decision is used."""
    raise AssertionError("not a view")
