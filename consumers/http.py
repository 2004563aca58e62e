"""The HTTP API: post to and read rooms, list rooms, health."""

from __future__ import annotations

import json
import logging
import os

from asgiref.sync import sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import access, health, metrics, rooms, validation
from gateway.runtime import runtime_of
from protocols.consumer import DirectDispatch

from .origins import WRONG_HOST_ERROR, allowed_host, cross_site_refusal

logger = logging.getLogger(__name__)

MAX_PAGE = 500
LARGEST_ID = 2**63 - 1
UNAVAILABLE_ERROR = "the room cannot be reached right now: try again shortly"
RETRY_AFTER = b"5"  # seconds


async def _user(request: HttpRequest):
    """The session's user, else the one an ``Authorization: Bearer <token>`` header names."""
    user = await request.auser()
    if user.is_authenticated:
        return user
    return await access.token_user({b"authorization": request.headers.get("Authorization", "").encode()})


class RoomMessagesConsumer(DirectDispatch, AsyncHttpConsumer):
    """``POST`` and ``GET /api/rooms/<room>/messages``: the API's busy endpoint, served as a consumer.

    As a Django view every request went through Django's request cycle under ASGI: a thread started
    and stopped for it (``ThreadSensitiveContext``), and each middleware step in a thread of its own,
    some 10 ms of CPU a post on a busy machine. Here a request is parsed, checked and answered on the
    event loop, with the database reached as everywhere else in the gateway (one shared thread)."""

    channel_layer_alias = None

    async def http_request(self, message: dict) -> None:
        self.size = getattr(self, "size", 0) + len(message.get("body", b""))
        if self.size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:  # refused before more of it is held
            await self.answer(413, error=f"the request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
            raise StopConsumer()
        await super().http_request(message)

    async def handle(self, body: bytes) -> None:
        try:
            await self.respond(body)
        except rooms.UNAVAILABLE as exc:  # the database or the layer is down: nothing is wrong with the request
            logger.warning("%s %s: services unavailable (%r)", self.scope["method"], self.scope["path"], exc)
            await self.answer(503, error=UNAVAILABLE_ERROR, headers=[(b"Retry-After", RETRY_AFTER)])

    async def respond(self, body: bytes) -> None:
        room, method = self.scope["url_route"]["kwargs"]["room"], self.scope["method"]
        if method not in ("GET", "POST"):
            return await self.answer(405, error="use GET or POST", headers=[(b"Allow", b"GET, POST")])
        if not allowed_host(self.scope):
            return await self.answer(400, error=WRONG_HOST_ERROR)
        runtime = runtime_of(self.scope)
        verdict = await runtime.verdicts(room, await access.scope_user(self.scope))
        if verdict is not access.Verdict.OK:  # a members-only room looks missing to outsiders
            return await self.answer(404, error=verdict.value)
        if method == "GET":
            return await self.read(room)
        refusal = cross_site_refusal(self.scope, body)
        if refusal is not None:
            return await self.answer(403, error=refusal)
        try:
            request = validation.parse_json(body)
        except rooms.InvalidMessage as exc:  # too deep, or NaN
            return await self.answer(400, error=str(exc))
        except ValueError:
            return await self.answer(400, error='invalid JSON: send {"message": "text"}')
        if not isinstance(request, dict) or "message" not in request:
            return await self.answer(400, error='send a JSON object with a "message" field')
        try:
            message = await runtime.rooms.post(room, request["message"], sender=request.get("sender"), source="http")
        except rooms.RateLimited as exc:
            return await self.answer(429, error=str(exc))
        except rooms.NoSuchRoom as exc:
            return await self.answer(404, error=str(exc))
        except rooms.InvalidMessage as exc:
            return await self.answer(400, error=str(exc))
        await self.answer(201, message)

    async def read(self, room: str) -> None:
        query = QueryDict(self.scope.get("query_string", b""))
        try:
            after, before = _whole_number(query, "after"), _whole_number(query, "before")
            limit = min(_whole_number(query, "limit", 100), MAX_PAGE)
        except ValueError:
            return await self.answer(400, error="'after', 'before' and 'limit' must be whole numbers")
        if limit < 1:
            return await self.answer(400, error="'limit' must be at least 1")
        await self.answer(200, {"messages": await rooms.history(room, after=after, before=before, limit=limit)})

    async def answer(self, status: int, content: dict | None = None, *, error: str = "", headers=()) -> None:
        if error:
            metrics.rejects.labels("http").inc()
            content = {"type": "error", "error": error}
        body = json.dumps(content, cls=DjangoJSONEncoder).encode()
        length = (b"Content-Length", str(len(body)).encode())
        await self.send_response(status, body, headers=[*JSON_HEADERS, length, *headers])


JSON_HEADERS = [(b"Content-Type", b"application/json"), (b"X-Content-Type-Options", b"nosniff")]


def _whole_number(query: QueryDict, name: str, default: int | None = None) -> int | None:
    """A query parameter as a whole number a database column can hold; ``ValueError`` otherwise."""
    value = query.get(name)
    if value is None:
        return default
    number = int(value)
    if not -LARGEST_ID <= number <= LARGEST_ID:  # beyond a 64-bit column: refused, not a database error
        raise ValueError(f"{name} out of range")
    return number


@require_GET
async def room_index(request: HttpRequest) -> JsonResponse:
    listing = await sync_to_async(rooms.room_list)(await _user(request))
    for room in listing:
        room["last_activity"] = room["last_activity"] and room["last_activity"].isoformat()
    return JsonResponse({"rooms": listing})


@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    """This process's metrics, in Prometheus's text format; with ``PROMETHEUS_MULTIPROC_DIR`` (set for
    ``gateway.serve --processes N``'s children), those of every process writing there, added up."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    components = await health.check(runtime_of(request.scope))
    healthy = all(state["ok"] for state in components.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "components": components}, status=200 if healthy else 503
    )
