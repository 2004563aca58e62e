from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway.models import Room, new_secret


class Command(BaseCommand):
    help = "Give a room a new secret mail address; the old one stops working at once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")

    def handle(self, *args, name: str, **options) -> None:
        updated = Room.objects.filter(name=name).update(email_token=(token := new_secret()))
        if not updated:
            raise CommandError(f"no room {name}")
        self.stdout.write(f"New secret mail address: {name}.{token}@{settings.EMAIL_DOMAIN}")
