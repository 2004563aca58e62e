import asyncio

from django.core.management.base import BaseCommand

from gateway.adapters import Adapters, run_until_signalled
from gateway.runtime import Runtime


class Command(BaseCommand):
    help = "Run the SMTP adapter alone on BIND:SMTP_PORT and serve the email scopes."

    def handle(self, *args, **options) -> None:
        from config.asgi import build_application

        runtime = Runtime()
        adapters = Adapters(build_application(runtime), runtime, mqtt=False)
        asyncio.run(run_until_signalled(adapters, "SMTP adapter running"))
