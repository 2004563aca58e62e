"""Rooms and their stored messages."""

import base64
import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

ROOM_NAME_REGEX = "[A-Za-z0-9_-]{1,64}"


def new_secret() -> str:
    return secrets.token_hex(8)


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def rooms_open_by_default() -> bool:
    return settings.ROOMS_OPEN


class Room(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[RegexValidator(f"^{ROOM_NAME_REGEX}$")])
    created_at = models.DateTimeField(default=timezone.now)
    # The id of the newest message: ids are handed out under this row's lock, so they
    # increase in commit order and a reader asking for "after N" never misses one.
    last_id = models.PositiveBigIntegerField(default=0)
    last_activity = models.DateTimeField(null=True, blank=True)
    # Who may post where: open rooms are the development default (ROOMS_OPEN), closed ones production's.
    public = models.BooleanField(
        default=rooms_open_by_default, help_text="Anyone may read and post in the browser and the API"
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="rooms")
    email_open = models.BooleanField(
        default=rooms_open_by_default, help_text="Mail to <room>@domain is taken, not only the secret address"
    )
    email_token = models.CharField(
        max_length=32, default=new_secret, help_text="The secret posting address is <room>.<token>@domain"
    )
    email_allowlist = models.TextField(
        blank=True, help_text="Senders allowed to post by mail, one address or @domain a line; empty: anyone"
    )
    mqtt_open = models.BooleanField(
        default=rooms_open_by_default, help_text="Any MQTT client may post, not only the room's devices"
    )

    def __str__(self) -> str:
        return self.name

    def email_sender_allowed(self, address: str) -> bool:
        allowed = [line.strip().lower() for line in self.email_allowlist.splitlines() if line.strip()]
        address = address.lower()
        return not allowed or address in allowed or "@" + address.rpartition("@")[2] in allowed


class ApiToken(models.Model):
    """A per-user secret for API clients: ``Authorization: Bearer <key>``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    key = models.CharField(max_length=64, unique=True, default=new_api_key)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.user} {self.name or 'token'} ({self.key[:4]}…)"  # never the whole secret


class Message(models.Model):
    class Source(models.TextChoices):
        WEBSOCKET = "websocket"
        MQTT = "mqtt"
        EMAIL = "email"
        HTTP = "http"

    # No index of its own: the unique (room, seq) below serves every lookup by room, and one index
    # fewer to update is CPU saved on every message stored.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.PositiveBigIntegerField(help_text="The message id, unique and increasing within its room")
    text = models.TextField()
    sender = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=Source.choices)
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # What makes a retry recognisable: "email:<Message-ID>", "mqtt:device/<device>:<id>" (on an open
    # room's bare topic "mqtt:sender/<claimed sender>:<id>"). Stored once per room.
    key = models.CharField(max_length=300, null=True, blank=True)
    # A hash of what a device sent, to recognise a broker's redelivery of a message without a key.
    # Indexed in Meta.indexes, not with db_index: on PostgreSQL that would add a second index for LIKE
    # queries, which nothing makes, updated on every message stored.
    digest = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        ordering = ["room", "seq"]
        indexes = [models.Index(fields=["digest"], name="message_digest")]
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
        return message_event(room_name, self.seq, self.text, self.sender, self.source, self.created_at, self.data)


def message_event(room: str, seq: int, text: str, sender: str, source: str, created_at, data) -> dict:
    """The contract's message object for a stored message's fields."""
    event = {
        "type": "message",
        "id": seq,
        "room": room,
        "message": text,
        "sender": sender,
        "source": source,
        "ts": created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if data is not None:
        event["data"] = data
    return event


class Attachment(models.Model):
    """A file that came with a mail (docs/email.md, "Attachments"), kept with Django's storage API. Stored
    before its message (whose ``data.attachments`` links to it), so ``message`` is set once that exists."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments")
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=200)
    size = models.PositiveIntegerField()
    file = models.FileField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.room_id} {self.name} ({self.size} bytes)"


@receiver(post_delete, sender=Attachment)
def delete_attachment_file(sender, instance: Attachment, **kwargs) -> None:
    """A deleted attachment (its message's or room's deletion included) takes its file with it."""
    if instance.file.name:
        instance.file.storage.delete(instance.file.name)


class Presence(models.Model):
    """A browser connected to a room now: one row per WebSocket connection, in any process."""

    room = models.CharField(max_length=64, db_index=True)
    channel_name = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=200)
    joined_at = models.DateTimeField(default=timezone.now)


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = 101) -> str:
    """Mosquitto's own password hash (``$7$``: PBKDF2-SHA512), so one stored hash serves both brokers."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class Device(models.Model):
    """An MQTT client allowed to post into some rooms: its user name is its name, and its sender."""

    name = models.CharField(max_length=64, unique=True, validators=[RegexValidator(f"^{ROOM_NAME_REGEX}$")])
    password_hash = models.CharField(max_length=200, editable=False)
    rooms = models.ManyToManyField(Room, blank=True, related_name="devices")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    def set_password(self, password: str) -> None:
        self.password_hash = mosquitto_hash(password)

    def check_password(self, password: str) -> bool:
        try:
            _, _, iterations, salt, _ = self.password_hash.split("$")
            expected = mosquitto_hash(password, base64.b64decode(salt), int(iterations))
        except ValueError:
            return False
        return hmac.compare_digest(expected, self.password_hash)


class DeadLetter(models.Model):
    """A message set aside because handling it kept failing: kept for an operator, so that its way in
    (an MQTT topic) could move on. See docs/mqtt.md, "Poison messages"."""

    PAYLOAD_KEPT = 64 * 1024  # bytes of the payload stored; ``size`` tells how long it was

    source = models.CharField(max_length=16, default="mqtt")
    topic = models.CharField(max_length=300)
    payload = models.BinaryField(help_text=f"The first {PAYLOAD_KEPT} bytes")
    size = models.PositiveIntegerField(help_text="The payload's length in bytes")
    reason = models.CharField(max_length=200)
    error = models.TextField(blank=True, help_text="The last failure")
    attempts = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.source} {self.topic} ({self.reason})"
