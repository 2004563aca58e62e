"""MQTT for ASGI: the adapter server, the ``mqtt`` consumer base and the topic router."""

from .consumer import AsyncMqttConsumer
from .routing import MqttTopicRouter, topic
from .server import DEFAULT_PUBLISH_GROUP, MqttServer, ParkedMessage

__all__ = ["AsyncMqttConsumer", "DEFAULT_PUBLISH_GROUP", "MqttServer", "MqttTopicRouter", "ParkedMessage", "topic"]
