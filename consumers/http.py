"""The HTTP API: post to and read rooms, list rooms, health."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import access, health, metrics, rooms

MAX_PAGE = 500


def _error(status: int, text: str) -> JsonResponse:
    metrics.rejects.labels("http").inc()
    return JsonResponse({"type": "error", "error": text}, status=status)


async def _user(request: HttpRequest):
    """The session's user, else the one an ``Authorization: Bearer <token>`` header names."""
    user = await request.auser()
    if user.is_authenticated:
        return user
    return await access.token_user({b"authorization": request.headers.get("Authorization", "").encode()})


@csrf_exempt
@require_http_methods(["GET", "POST"])
async def room_messages(request: HttpRequest, room: str) -> JsonResponse:
    verdict = await access.averdict(room, await _user(request))
    if verdict is not access.Verdict.OK:
        return _error(404 if verdict is access.Verdict.MISSING else 403, verdict.value)
    if request.method == "GET":
        return await _read(request, room)
    try:
        body = json.loads(request.body)
    except ValueError:
        return _error(400, 'invalid JSON: send {"message": "text"}')
    if not isinstance(body, dict) or "message" not in body:
        return _error(400, 'send a JSON object with a "message" field')
    try:
        message = await rooms.post(room, body["message"], sender=body.get("sender"), source="http")
    except rooms.RateLimited as exc:
        return _error(429, str(exc))
    except rooms.NoSuchRoom as exc:
        return _error(404, str(exc))
    except rooms.InvalidMessage as exc:
        return _error(400, str(exc))
    return JsonResponse(message, status=201)


def _whole_number(request: HttpRequest, name: str, default: int | None = None) -> int | None:
    value = request.GET.get(name)
    return default if value is None else int(value)


async def _read(request: HttpRequest, room: str) -> JsonResponse:
    try:
        after, before = _whole_number(request, "after"), _whole_number(request, "before")
        limit = min(_whole_number(request, "limit", 100), MAX_PAGE)
    except ValueError:
        return _error(400, "'after', 'before' and 'limit' must be whole numbers")
    if limit < 1:
        return _error(400, "'limit' must be at least 1")
    return JsonResponse({"messages": await rooms.history(room, after=after, before=before, limit=limit)})


@require_GET
async def room_index(request: HttpRequest) -> JsonResponse:
    listing = await sync_to_async(rooms.room_list)(await _user(request))
    for room in listing:
        room["last_activity"] = room["last_activity"] and room["last_activity"].isoformat()
    return JsonResponse({"rooms": listing})


@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    """This process's metrics, in Prometheus's text format."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    components = await health.check()
    healthy = all(state["ok"] for state in components.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "components": components}, status=200 if healthy else 503
    )
