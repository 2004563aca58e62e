"""Which MQTT clients may do what, in one place for the embedded broker, Mosquitto's files and the adapter.

Devices (``gateway.models.Device``) publish to ``rooms/<room>/in/<device>`` and hear ``rooms/<room>/out``
for their rooms; the adapter's own account (the user of ``MQTT_URL``) may do everything; anonymous
clients only in the open, development profile (``ROOMS_OPEN``). A broker does not tell a subscriber who
published, so the topic does: a device may publish only to the topic that ends in its own name, and the
last level of a topic it posted to is the identity the broker authenticated.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from django.conf import settings

from .models import Device, Room, mosquitto_hash
from .topics import DEVICE_IN_FILTER, IN_FILTER, OUT_FILTER, in_topic, out_topic


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
    room = levels[1] if len(levels) > 1 else ""
    # Publish only to the topic that names the device (its identity to the adapter), hear the room.
    if levels != (["rooms", room, "in", username] if publish else ["rooms", room, "out"]):
        return False
    return Device.objects.filter(name=username, is_active=True, rooms__name=room).exists()


@dataclass(frozen=True)
class MqttRules:
    """Whom the adapter takes a room's MQTT posts from: anyone on ``rooms/<room>/in`` when the room is
    *MQTT open* (or yet to be made), and its own devices, each on ``rooms/<room>/in/<device>``."""

    room: str
    open: bool
    devices: frozenset[str]

    def refusal(self, device: str | None) -> str | None:
        """Why a post on the device's topic (``None``: the bare topic) is refused, or None."""
        if device is not None:
            return None if device in self.devices else f"{device} is not a device of room {self.room}"
        if self.open:
            return None
        if self.devices:  # the bare topic names nobody: only the device topics do
            return f"room {self.room} takes posts from its devices only, on {in_topic(self.room, '<device>')}"
        return f"room {self.room} takes no MQTT posts (not MQTT-open, no devices)"


def mqtt_rules(room: str) -> MqttRules:
    """The room's rules as the database has them now."""
    row = Room.objects.filter(name=room).first()
    if row is None:  # made by its first message, or refused then (ROOMS_AUTO_CREATE)
        return MqttRules(room, open=True, devices=frozenset())
    names = row.devices.filter(is_active=True).values_list("name", flat=True)
    return MqttRules(room, open=row.mqtt_open, devices=frozenset(names))


def mosquitto_files() -> tuple[str, str]:
    """Mosquitto's ``password_file`` and ``acl_file`` for the devices and the adapter."""
    adapter, adapter_password = _adapter()
    devices = Device.objects.filter(is_active=True).prefetch_related("rooms").order_by("name")
    passwords = [f"{device.name}:{device.password_hash}" for device in devices]
    acl = ["# Written by manage.py mosquittofiles: do not edit, run it again.", ""]
    if adapter:
        passwords.insert(0, f"{adapter}:{mosquitto_hash(adapter_password)}")
        acl += [f"user {adapter}", f"topic read {IN_FILTER}", f"topic read {DEVICE_IN_FILTER}"]
        acl += [f"topic write {OUT_FILTER}", ""]
    for device in devices:
        acl.append(f"user {device.name}")
        for room in device.rooms.order_by("name"):
            acl += [f"topic write {in_topic(room.name, device.name)}", f"topic read {out_topic(room.name)}"]
        acl.append("")
    return "\n".join(passwords) + "\n", "\n".join(acl)
