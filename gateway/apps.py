from django.apps import AppConfig
from django.urls import register_converter


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the production checks)
        from .rooms import RoomNameConverter

        # One converter for URLs, MQTT topics and mail addresses: <room:room>.
        register_converter(RoomNameConverter, "room")
