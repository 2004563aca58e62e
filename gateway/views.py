"""The browser pages: the room list and a room."""

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from . import access, rooms
from .devices import mqtt_rules
from .models import ROOM_NAME_REGEX, Room
from .topics import in_topic


def chat_index(request: HttpRequest) -> HttpResponse:
    context = {"rooms": rooms.room_list(request.user), "room_pattern": ROOM_NAME_REGEX}
    return render(request, "gateway/index.html", context)


def chat_room(request: HttpRequest, room: str) -> HttpResponse:
    """The room, and how to post into it from elsewhere (MQTT, mail, HTTP)."""
    verdict = access.verdict(room, request.user)
    if verdict is not access.Verdict.OK:  # members-only or missing: the same answer for both
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        raise Http404(verdict.value)
    broker = urlsplit(settings.MQTT_URL)
    mqtt_open = mqtt_rules(room).open
    context = {
        "room": room,
        "mqtt_host": broker.hostname,
        "mqtt_port": broker.port or 1883,
        # An MQTT-open room takes anyone's posts on the bare topic; a devices-only one each device's on
        # the topic that names it, from its own account.
        "mqtt_devices_only": not mqtt_open,
        "mqtt_topic": in_topic(room) if mqtt_open else in_topic(room, "DEVICE"),
        # Only an address the room takes: a closed room takes mail at its secret address alone.
        "email_address": f"{room}@{settings.EMAIL_DOMAIN}" if takes_plain_mail(room) else None,
        "smtp_host": request.get_host().rsplit(":", 1)[0],
        "smtp_port": settings.SMTP_PORT,
        "api_url": request.build_absolute_uri(f"/api/rooms/{room}/messages"),
    }
    return render(request, "gateway/room.html", context)


def takes_plain_mail(room: str) -> bool:
    """Mail to ``<room>@EMAIL_DOMAIN`` is taken: the room is *email open* (a room yet to be made will be
    when rooms are open by default)."""
    found = Room.objects.filter(name=room).values_list("email_open", flat=True).first()
    return settings.ROOMS_OPEN if found is None else found
