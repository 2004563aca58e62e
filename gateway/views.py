"""The browser pages: the room list and a room."""

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from . import rooms
from .models import ROOM_NAME_REGEX


def chat_index(request: HttpRequest) -> HttpResponse:
    return render(request, "gateway/index.html", {"rooms": rooms.room_list(), "room_pattern": ROOM_NAME_REGEX})


def chat_room(request: HttpRequest, room: str) -> HttpResponse:
    """The room, and how to post into it from elsewhere (MQTT, mail, HTTP)."""
    broker = urlsplit(settings.MQTT_URL)
    context = {
        "room": room,
        "mqtt_host": broker.hostname,
        "mqtt_port": broker.port or 1883,
        "mqtt_topic": f"rooms/{room}/in",
        "email_address": f"{room}@{settings.EMAIL_DOMAIN}",
        "smtp_host": request.get_host().rsplit(":", 1)[0],
        "smtp_port": settings.SMTP_PORT,
        "api_url": request.build_absolute_uri(f"/api/rooms/{room}/messages"),
    }
    return render(request, "gateway/room.html", context)
