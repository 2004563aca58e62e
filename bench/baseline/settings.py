"""Settings of the baseline chat: the Channels tutorial's, in production form (DEBUG off) on channels-redis.

Read from the environment by the bench (``BASELINE_REDIS_URL``, ``BASELINE_CHANNEL_PREFIX``) so that its
Redis keys never meet the gateway's or anyone else's.
"""

import os

DEBUG = False
SECRET_KEY = os.environ.get("BASELINE_SECRET_KEY", "baseline-bench-only-not-a-secret-0123456789abcdef")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.baseline.urls"
ASGI_APPLICATION = "bench.baseline.asgi.application"

# The tutorial's AuthMiddlewareStack resolves users lazily: the chat never touches the database.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("BASELINE_CHANNEL_PREFIX", "baseline"),
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
