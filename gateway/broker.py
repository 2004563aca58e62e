"""The embedded MQTT broker (amqtt) for machines without one, enforcing ``gateway.devices``' rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from channels.db import database_sync_to_async

from . import devices


class DeviceAuthPlugin(BaseAuthPlugin):
    """Devices log in with their passwords, the adapter with MQTT_URL's; anonymous only when rooms are open."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Any) -> bool:
        return await database_sync_to_async(devices.authenticate)(session.username, session.password)


class DeviceTopicPlugin(BaseTopicPlugin):
    """Devices publish into their rooms and hear them; nothing else."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None, action: Any = None) -> bool:
        username = session.username if session is not None else None
        return await database_sync_to_async(devices.may)(username, topic or "", action == Action.PUBLISH)


async def start_embedded_broker(url: str) -> Broker:
    """An amqtt broker on the address of ``url``."""
    parts = urlsplit(url)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{parts.hostname}:{parts.port or 1883}"}},
            "plugins": {f"{__name__}.DeviceAuthPlugin": {}, f"{__name__}.DeviceTopicPlugin": {}},
        }
    )
    await broker.start()
    return broker
