import asyncio

from channels.routing import get_default_application
from django.core.management.base import BaseCommand

from gateway.adapters import Adapters, run_until_signalled


class Command(BaseCommand):
    help = "Run the SMTP adapter alone on BIND:SMTP_PORT and serve the email scopes."

    def handle(self, *args, **options) -> None:
        adapters = Adapters(get_default_application(), mqtt=False)
        asyncio.run(run_until_signalled(adapters, "SMTP adapter running"))
