"""Which MQTT clients may do what, in one place for the embedded broker, Mosquitto's files and the adapter.

Devices (``gateway.models.Device``) publish to ``rooms/<room>/in`` and hear ``rooms/<room>/out`` for
their rooms; the adapter's own account (the user of ``MQTT_URL``) may do everything; anonymous
clients only in the open, development profile (``ROOMS_OPEN``).
"""

from __future__ import annotations

import hmac
from urllib.parse import unquote, urlsplit

from django.conf import settings

from .models import Device, Room, mosquitto_hash


def _adapter() -> tuple[str | None, str]:
    broker = urlsplit(settings.MQTT_URL)
    return (unquote(broker.username) if broker.username else None), unquote(broker.password or "")


def authenticate(username: str | None, password: str | None) -> bool:
    if not username:
        return settings.ROOMS_OPEN
    adapter, adapter_password = _adapter()
    if username == adapter:
        return hmac.compare_digest(password or "", adapter_password)
    device = Device.objects.filter(name=username, is_active=True).first()
    return device is not None and device.check_password(password or "")


def may(username: str | None, topic: str, publish: bool) -> bool:
    """May this client publish to (or, with ``publish`` false, subscribe to and receive) ``topic``?"""
    if not username:
        return settings.ROOMS_OPEN
    if username == _adapter()[0]:
        return True
    levels = topic.split("/")
    if len(levels) != 3 or levels[0] != "rooms" or levels[2] != ("in" if publish else "out"):
        return False
    return Device.objects.filter(name=username, is_active=True, rooms__name=levels[1]).exists()


def room_takes_mqtt(room: str) -> bool:
    """Whether the adapter serves posts into ``room``: an open room, or one with devices of its own."""
    row = Room.objects.filter(name=room).first()
    return row is None or row.mqtt_open or row.devices.filter(is_active=True).exists()


def mosquitto_files() -> tuple[str, str]:
    """Mosquitto's ``password_file`` and ``acl_file`` for the devices and the adapter."""
    adapter, adapter_password = _adapter()
    devices = Device.objects.filter(is_active=True).prefetch_related("rooms").order_by("name")
    passwords = [f"{device.name}:{device.password_hash}" for device in devices]
    acl = ["# Written by manage.py mosquittofiles: do not edit, run it again.", ""]
    if adapter:
        passwords.insert(0, f"{adapter}:{mosquitto_hash(adapter_password)}")
        acl += [f"user {adapter}", "topic read rooms/+/in", "topic write rooms/+/out", ""]
    for device in devices:
        acl.append(f"user {device.name}")
        for room in device.rooms.order_by("name"):
            acl += [f"topic write rooms/{room.name}/in", f"topic read rooms/{room.name}/out"]
        acl.append("")
    return "\n".join(passwords) + "\n", "\n".join(acl)
