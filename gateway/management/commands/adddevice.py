import secrets

from django.core.management.base import BaseCommand, CommandError

from gateway.models import Device, Room
from gateway.topics import in_topic, out_topic


class Command(BaseCommand):
    help = "Create an MQTT device allowed into some rooms, and print its password (shown once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--room", action="append", default=[], help="a room it may post into (repeatable)")

    def handle(self, *args, name: str, room: list[str], **options) -> None:
        rooms = list(Room.objects.filter(name__in=room))
        if len(rooms) != len(set(room)):
            raise CommandError(f"unknown rooms among {room}: create them first (addroom)")
        password = secrets.token_urlsafe(18)
        device = Device(name=name)
        device.set_password(password)
        device.full_clean()
        device.save()
        device.rooms.set(rooms)
        self.stdout.write(f"Device {name} created. MQTT user name: {name}  password: {password}")
        for row in sorted(rooms, key=lambda row: row.name):  # the only topics its account may publish to
            self.stdout.write(f"  {row.name}: publish to {in_topic(row.name, name)}, hear {out_topic(row.name)}")
