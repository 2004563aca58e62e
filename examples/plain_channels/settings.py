"""A plain Channels project's settings: nothing of the gateway, only what Channels needs."""

SECRET_KEY = "example-only"
INSTALLED_APPS = ["channels"]
ASGI_APPLICATION = "asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
