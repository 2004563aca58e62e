from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway.models import Room


class Command(BaseCommand):
    help = "Create a room (production creates rooms here or in the admin) and print its secret mail address."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--public", action="store_true", help="anyone may read and post in the browser and API")
        parser.add_argument("--email-open", action="store_true", help="take mail at <room>@domain too")
        parser.add_argument("--member", action="append", default=[], help="a username allowed in (repeatable)")

    def handle(self, *args, name: str, public: bool, email_open: bool, member: list[str], **options) -> None:
        room = Room(name=name, public=public, email_open=email_open)
        room.full_clean()  # the name pattern, uniqueness
        room.save()
        from django.contrib.auth import get_user_model

        users = get_user_model().objects.filter(username__in=member)
        if len(users) != len(set(member)):
            raise CommandError(f"unknown users among {member}")
        room.members.set(users)
        self.stdout.write(
            f"Room {name} created. Secret mail address: {name}.{room.email_token}@{settings.EMAIL_DOMAIN}"
        )
