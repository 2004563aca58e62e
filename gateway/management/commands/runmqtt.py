import asyncio

from channels.routing import get_default_application
from django.core.management.base import BaseCommand

from gateway.adapters import Adapters, run_until_signalled


class Command(BaseCommand):
    help = "Run the MQTT adapter alone: subscribe to the broker at MQTT_URL and serve the mqtt scopes."

    def handle(self, *args, **options) -> None:
        adapters = Adapters(get_default_application(), smtp=False)
        asyncio.run(run_until_signalled(adapters, "MQTT adapter running"))
