import asyncio

from django.core.management.base import BaseCommand

from gateway.adapters import Adapters, run_until_signalled
from gateway.runtime import Runtime


class Command(BaseCommand):
    help = "Run the MQTT adapter alone: subscribe to the broker at MQTT_URL and serve the mqtt scopes."

    def handle(self, *args, **options) -> None:
        from config.asgi import build_application

        runtime = Runtime()
        adapters = Adapters(build_application(runtime), runtime, smtp=False)
        asyncio.run(run_until_signalled(adapters, "MQTT adapter running"))
