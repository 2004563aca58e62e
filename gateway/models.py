"""Rooms and their stored messages."""

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

ROOM_NAME_REGEX = "[A-Za-z0-9_-]{1,64}"


class Room(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[RegexValidator(f"^{ROOM_NAME_REGEX}$")])
    created_at = models.DateTimeField(default=timezone.now)
    # The id of the newest message: ids are handed out under this row's lock, so they
    # increase in commit order and a reader asking for "after N" never misses one.
    last_id = models.PositiveBigIntegerField(default=0)
    last_activity = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    class Source(models.TextChoices):
        WEBSOCKET = "websocket"
        MQTT = "mqtt"
        EMAIL = "email"
        HTTP = "http"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField(help_text="The message id, unique and increasing within its room")
    text = models.TextField()
    sender = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=Source.choices)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # What makes a retry recognisable: "email:<Message-ID>", "mqtt:<sender>:<id>". Stored once per room.
    key = models.CharField(max_length=300, null=True, blank=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="unique_message_id_per_room"),
            models.UniqueConstraint(
                fields=["room", "key"], condition=models.Q(key__isnull=False), name="unique_message_key_per_room"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq} {self.sender}: {self.text[:40]}"

    def as_event(self, room_name: str) -> dict:
        """The contract's message object."""
        event = {
            "type": "message",
            "id": self.seq,
            "room": room_name,
            "message": self.text,
            "sender": self.sender,
            "source": self.source,
            "ts": self.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if self.data is not None:
            event["data"] = self.data
        return event


class Presence(models.Model):
    """A browser connected to a room now: one row per WebSocket connection, in any process."""

    room = models.CharField(max_length=64, db_index=True)
    channel_name = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=200)
    joined_at = models.DateTimeField(default=timezone.now)
