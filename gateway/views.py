"""The browser pages: the room list and a room."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from . import rooms
from .models import ROOM_NAME_REGEX


def chat_index(request: HttpRequest) -> HttpResponse:
    return render(request, "gateway/index.html", {"rooms": rooms.room_list(), "room_pattern": ROOM_NAME_REGEX})


def chat_room(request: HttpRequest, room: str) -> HttpResponse:
    return render(request, "gateway/room.html", {"room": room})
