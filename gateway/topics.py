"""Every name the gateway gives a room outside the database: its MQTT topics, the routes that match
them, the broker ACL's filters, and its channel-layer groups and claim keys. One module, so a
topic's shape is changed in one place (the tests build theirs from here too)."""

from __future__ import annotations

from protocols.mqtt import DEFAULT_PUBLISH_GROUP

# MQTT: a device posts on the topic that names it, anyone (in an MQTT open room) on the bare one; the
# room's messages go out on its ``out`` topic.
IN_ROUTE = "rooms/<room:room>/in"  # protocols.mqtt.topic() patterns (consumers/routing.py)
DEVICE_IN_ROUTE = "rooms/<room:room>/in/<room:device>"
IN_FILTER, DEVICE_IN_FILTER, OUT_FILTER = "rooms/+/in", "rooms/+/in/+", "rooms/+/out"  # the broker's ACL


def in_topic(room: str, device: str | None = None) -> str:
    """Where a device (or, ``device`` None, anyone) posts into ``room``."""
    return f"rooms/{room}/in" if device is None else f"rooms/{room}/in/{device}"


def out_topic(room: str) -> str:
    """Where ``room``'s messages are published, each once."""
    return f"rooms/{room}/out"


# The channel layer.
PUBLISH_GROUP = DEFAULT_PUBLISH_GROUP  # the MQTT adapters' relay group (MQTT egress), protocols.mqtt's default


PRESENCE_GROUP = "rooms.presence"  # every process's hub: who is in the rooms announcing in a moment


def room_group(room: str) -> str:
    """The layer group of a room's live readers: each process's hub joins it once."""
    return f"room.{room}"


def publish_claim(key: str) -> str:
    """The claim an adapter takes before publishing a batch (``StoredBatch.key``): the first one publishes."""
    return f"published:{key}"
