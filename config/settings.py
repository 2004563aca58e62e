"""Settings for the gateway, read from the environment (see README, "Configuration")."""

import os
import socket
import tempfile
from datetime import timedelta
from pathlib import Path

from environs import Env

BASE_DIR = Path(__file__).resolve().parent.parent

env = Env()
env.read_env(BASE_DIR / ".env", recurse=False)

DEBUG = env.bool("DEBUG", True)
SECRET_KEY = env.str("SECRET_KEY", "dev-insecure-only-for-make-run")  # refused when DEBUG is off
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["*"] if DEBUG else [])
# Other origins (scheme://host[:port]) whose pages may use the session: logins, WebSockets (docs/security.md).
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])
# Production checks acknowledged on purpose (gateway/checks.py), e.g. gateway.E007 on a private network.
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", [])

# Listeners and protocols
BIND = env.str("BIND", "127.0.0.1")
HTTP_PORT = env.int("HTTP_PORT", 8000)
SMTP_PORT = env.int("SMTP_PORT", 2525)
EMAIL_DOMAIN = env.str("EMAIL_DOMAIN", "localhost").lower()
MQTT_URL = env.str("MQTT_URL", "mqtt://127.0.0.1:1883")
# The adapter's session is persistent: what arrives while it is down waits at the broker. Unset, its client id
# is gateway-<MQTT_NODE_NAME>-<n>, n the lowest slot free on this host (a lock in MQTT_SLOT_DIR): a restart
# takes the same id back, and no two adapters share one. Set it to choose (one per adapter).
MQTT_CLIENT_ID = env.str("MQTT_CLIENT_ID", "")
MQTT_NODE_NAME = env.str("MQTT_NODE_NAME", socket.gethostname())  # this host, in the default client id
MQTT_SLOT_DIR = env.str("MQTT_SLOT_DIR", os.path.join(tempfile.gettempdir(), "gateway-mqtt-slots"))
MQTT_SESSION_EXPIRY = env.int("MQTT_SESSION_EXPIRY", 86400)  # MQTT 5: seconds the broker keeps an absent session
MQTT_PROTOCOL = env.str("MQTT_PROTOCOL", "auto")  # auto: MQTT 5, or 3.1.1 when the broker refuses 5; or 5, 3.1.1
MQTT_FAST_CLIENT = env.bool("MQTT_FAST_CLIENT", False)  # opt-in paho 2.2.0 BufferedClient (docs/paho-upstream.md)
MQTT_EMBEDDED_BROKER = env.str("MQTT_EMBEDDED_BROKER", "auto")  # rungateway: auto (Mosquitto, else amqtt), or one
MQTT_SHARED_GROUP = env.str("MQTT_SHARED_GROUP", "")  # set: adapters share rooms/+/in ($share/<group>/...)
# The channel layer: unset, in memory (one process); set, channels-redis (see docs/deploy.md). REDIS_URL may
# list several comma-separated URLs (sharding: every process must list the same ones in the same order).
REDIS_URL = env.str("REDIS_URL", "")
# Set: find the master through Redis Sentinel ("host:port,host:port"); REDIS_URL then gives only the master's
# user, password, database and TLS (rediss://), not its address. Several master names: sharding.
REDIS_SENTINELS = [entry.strip() for entry in env.list("REDIS_SENTINELS", []) if entry.strip()]
REDIS_SENTINEL_MASTER = [name.strip() for name in env.list("REDIS_SENTINEL_MASTER", []) if name.strip()] or ["mymaster"]
REDIS_SENTINEL_PASSWORD = env.str("REDIS_SENTINEL_PASSWORD", "")  # the sentinels' own password (requirepass)
CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", "gateway")

# Access: the development profile opens rooms to everyone and creates them on first use;
# production (DEBUG off) closes them: members, secret mail addresses, rooms made in the admin.
ROOMS_OPEN = env.bool("ROOMS_OPEN", DEBUG)
ROOMS_AUTO_CREATE = env.bool("ROOMS_AUTO_CREATE", DEBUG)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/chat/"
# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one user from one address,
# that pair is refused (429) for LOGIN_COOLOFF_SECONDS, longer while it keeps trying.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env.float("LOGIN_COOLOFF_SECONDS", 900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

# Browser hardening. Every page: a Content-Security-Policy (gateway/csp.py; the pages have no inline code).
# BEHIND_TLS_PROXY: a proxy ends TLS and says so in X-Forwarded-Proto (deploy/nginx); then cookies are
# Secure and HSTS is sent. Never set it where clients reach daphne directly: they could claim https.
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("HSTS_SECONDS", 365 * 24 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Limits
MESSAGE_MAX_LENGTH = env.int("MESSAGE_MAX_LENGTH", 4000)
DATA_MAX_DEPTH = env.int("DATA_MAX_DEPTH", 32)  # JSON nesting levels, of a request, a payload or a reading
DATA_MAX_BYTES = env.int("DATA_MAX_BYTES", 16 * 1024)  # a reading's data, as compact JSON
WEBSOCKET_MAX_FRAME = env.int("WEBSOCKET_MAX_FRAME", 64 * 1024)
MQTT_MAX_PAYLOAD = env.int("MQTT_MAX_PAYLOAD", 64 * 1024)
MQTT_MAX_IN_FLIGHT = env.int("MQTT_MAX_IN_FLIGHT", 1000)  # a topic's messages being stored at once (one batch)
MQTT_MAX_FAILURES = env.int("MQTT_MAX_FAILURES", 3)  # tries of a message whose handling raises, then it is parked
MQTT_STUCK_SECONDS = env.float("MQTT_STUCK_SECONDS", 60)  # /healthz: mqtt "stuck" past this unacknowledged
SMTP_MAX_MESSAGE_SIZE = env.int("SMTP_MAX_MESSAGE_SIZE", 1024 * 1024)
READER_MAX_BACKLOG = env.int("READER_MAX_BACKLOG", 1024 * 1024)  # bytes a reader may fall behind; then closed
HISTORY_ON_JOIN = env.int("HISTORY_ON_JOIN", 50)
GROUP_REFRESH_SECONDS = env.float("GROUP_REFRESH_SECONDS", 60)  # readers rejoin their room's group this often
# Rate limits, messages a second on average (0: no limit); bursts of RATE_BURST_SECONDS worth pass.
WEBSOCKET_RATE = env.float("WEBSOCKET_RATE", 5)  # per WebSocket connection
DEVICE_RATE = env.float("DEVICE_RATE", 20)  # per MQTT sender
MAIL_SENDER_RATE = env.float("MAIL_SENDER_RATE", 1)  # per envelope sender and room
ROOM_RATE = env.float("ROOM_RATE", 100)  # per room, whatever the source
RATE_BURST_SECONDS = env.float("RATE_BURST_SECONDS", 10)
SMTP_MAX_RECIPIENTS = env.int("SMTP_MAX_RECIPIENTS", 20)
SMTP_MAX_SESSIONS = env.int("SMTP_MAX_SESSIONS", 100)
SMTP_IDLE_TIMEOUT = env.float("SMTP_IDLE_TIMEOUT", 300)  # per command; every byte starts it again
SMTP_SESSION_TIMEOUT = env.float("SMTP_SESSION_TIMEOUT", 600)  # a whole session at most (0: no limit)
# Refused RCPTs (unknown or closed rooms, wrong secrets): this many in a session, then 421 and closed;
# from one address, a burst of SMTP_REFUSED_RECIPIENT_BURST, then SMTP_REFUSED_RECIPIENT_RATE a second.
SMTP_MAX_REFUSED_RECIPIENTS = env.int("SMTP_MAX_REFUSED_RECIPIENTS", 5)
SMTP_REFUSED_RECIPIENT_RATE = env.float("SMTP_REFUSED_RECIPIENT_RATE", 0.1)
SMTP_REFUSED_RECIPIENT_BURST = env.int("SMTP_REFUSED_RECIPIENT_BURST", 20)
# HTTP (the gateway's server, gateway/server.py: rungateway and `python -m gateway.serve`): a connection
# that sends nothing for this long, mid-request or between requests, is closed; a request's headers must
# be complete within HTTP_HEADER_TIMEOUT of its start (0: no deadline), however slowly they trickle.
HTTP_IDLE_TIMEOUT = env.float("HTTP_IDLE_TIMEOUT", 30)
HTTP_HEADER_TIMEOUT = env.float("HTTP_HEADER_TIMEOUT", 10)
# On SIGTERM the gateway's server stops listening, then answers the requests it has read, for at most this long.
HTTP_DRAIN_TIMEOUT = env.float("HTTP_DRAIN_TIMEOUT", 10)
# Admission (gateway/admission.py): new connections are accepted only while fewer connections awaiting
# their first request and WebSocket handshakes than this are in progress (0: no limit); the rest wait
# in the listen backlog, LISTEN_BACKLOG long (capped by the kernel's net.core.somaxconn) on every
# TCP/UNIX endpoint that does not name its own.
MAX_PENDING_HANDSHAKES = env.int("MAX_PENDING_HANDSHAKES", 100)
LISTEN_BACKLOG = env.int("LISTEN_BACKLOG", 4096)
# python -m gateway.serve: that many of the gateway's daphnes on its one listening socket, under a parent
# that holds it (gateway/process_group.py; its --processes overrides this). Above 1 needs REDIS_URL.
ASGI_PROCESSES = env.int("ASGI_PROCESSES", 1)
# Opt-in patch of Twisted's TCP writes (gateway/write_through.py): version-checked, off by default.
TWISTED_WRITE_THROUGH = env.bool("TWISTED_WRITE_THROUGH", False)
# Health: /healthz says degraded while the event loop has run late by more than this lately (gateway/loop_lag.py).
LOOP_LAG_LIMIT = env.float("LOOP_LAG_LIMIT", 1.0)
# Mail reading (docs/email.md, "Reading a mail"): caps checked on the raw bytes first, then a parse in a
# worker process within a time budget; over either, 554 5.6.0.
MAIL_MAX_HEADERS = env.int("MAIL_MAX_HEADERS", 500)  # header fields in the whole mail
MAIL_MAX_HEADER_LENGTH = env.int("MAIL_MAX_HEADER_LENGTH", 8000)  # bytes of one field, all its folded lines
MAIL_MAX_MIME_HEADER_LENGTH = env.int("MAIL_MAX_MIME_HEADER_LENGTH", 2000)  # bytes of one Content-* field
MAIL_MAX_ENCODED_WORDS = env.int("MAIL_MAX_ENCODED_WORDS", 300)  # RFC 2047 words in all headers
MAIL_MAX_PARTS = env.int("MAIL_MAX_PARTS", 100)
MAIL_MAX_MIME_DEPTH = env.int("MAIL_MAX_MIME_DEPTH", 10)
MAIL_PARSE_TIMEOUT = env.float("MAIL_PARSE_TIMEOUT", 2.0)  # seconds of a worker's time for one mail
MAIL_PARSE_WORKERS = env.int("MAIL_PARSE_WORKERS", min(8, max(2, os.cpu_count() or 1)))  # a mail takes ~1 ms
# Mail attachments (docs/email.md, "Attachments"): over any of these the mail is refused, 552 5.3.4.
MAIL_MAX_ATTACHMENTS = env.int("MAIL_MAX_ATTACHMENTS", 10)  # files in one mail (0: no attachments taken)
MAIL_MAX_ATTACHMENT_BYTES = env.int("MAIL_MAX_ATTACHMENT_BYTES", 5 * 1024 * 1024)  # one file, decoded
MAIL_MAX_ATTACHMENTS_BYTES = env.int("MAIL_MAX_ATTACHMENTS_BYTES", 10 * 1024 * 1024)  # all of a mail's files

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gateway.csp.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",
]

if not DEBUG:
    # In development the gateway serves static files itself (config/asgi.py); in production
    # WhiteNoise serves what `manage.py collectstatic` gathered into STATIC_ROOT.
    MIDDLEWARE.insert(1, "gateway.static.AsyncWhiteNoiseMiddleware")

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Connections are reused: opening one per query would dominate a busy gateway. PostgreSQL gets a pool
# per process (Django serves requests from threads that come and go, each of which would otherwise hold
# a persistent connection of its own); SQLite keeps each thread's connection.
DATABASES = {"default": env.dj_db_url("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A caller waits up to 2 s for a connection: longer means the database is down (mail gets 451 in time).
    pool = {"min_size": 1, "max_size": env.int("DATABASE_POOL_SIZE", 10), "timeout": 2}
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = pool
else:
    DATABASES["default"].update(CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (runmqtt, runsmtp, daphne) may share one SQLite file:
    # take the write lock up front and wait for it rather than fail.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Each process has one channel for all its room readers (fanout/hub.py) and one for its MQTT relay:
# room for a burst of batches there, where a reader's own channel would have needed only the default 100.
HUB_CAPACITY = {"hub.*": 10_000, "mqtt-relay.*": 10_000}

redis_urls = [url.strip() for url in REDIS_URL.split(",") if url.strip()]
if redis_urls or REDIS_SENTINELS:
    from urllib.parse import urlsplit

    from django.core.exceptions import ImproperlyConfigured
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    def redis_retry() -> dict:
        # A restarted Redis (or a failed-over master) leaves dead connections in the pool: retry on a fresh one.
        return {
            # Longer than channels-redis's 5 s blocking pop: redis-py 8's default (5 s) makes idle receives fail.
            "socket_timeout": 15,
            "socket_keepalive": True,
            "retry": Retry(ExponentialBackoff(cap=2, base=0.05), retries=5),
            "retry_on_error": [RedisConnectionError, ConnectionResetError, BrokenPipeError],
        }

    if not REDIS_SENTINELS:
        redis_hosts = [{"address": url, **redis_retry()} for url in redis_urls]
    else:
        if len(redis_urls) > 1:
            raise ImproperlyConfigured("With REDIS_SENTINELS, REDIS_URL is one URL (the master's credentials)")
        master = {}  # user, password, database, TLS: everything but the address, which Sentinel gives
        if redis_urls:
            if urlsplit(redis_urls[0]).scheme not in ("redis", "rediss"):
                raise ImproperlyConfigured("With REDIS_SENTINELS, REDIS_URL is redis:// or rediss://")
            master = parse_url(redis_urls[0])
            for key in ("host", "port", "connection_class"):
                master.pop(key, None)
            master["ssl"] = redis_urls[0].startswith("rediss://")
        sentinels = []
        for entry in REDIS_SENTINELS:
            try:
                address = urlsplit(f"//{entry}")
                sentinels.append((address.hostname, address.port or 26379))
            except ValueError:
                address = None
            if address is None or not address.hostname:
                raise ImproperlyConfigured(f"REDIS_SENTINELS: {entry!r} is not host:port")
        sentinel_kwargs = {"socket_connect_timeout": 2, "socket_timeout": 2}  # a dead sentinel: ask the next
        if REDIS_SENTINEL_PASSWORD:
            sentinel_kwargs["password"] = REDIS_SENTINEL_PASSWORD
        redis_hosts = [
            {"sentinels": sentinels, "master_name": name, "sentinel_kwargs": sentinel_kwargs, **master, **redis_retry()}
            for name in REDIS_SENTINEL_MASTER
        ]
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "fanout.redis_layer.GatewayRedisChannelLayer",  # channels-redis core + one-pop receive, claim
            "CONFIG": {"hosts": redis_hosts, "prefix": CHANNEL_LAYER_PREFIX, "channel_capacity": HUB_CAPACITY},
        }
    }
else:
    # (Its channel_capacity is not compiled as channels-redis's is: one capacity for all, there are few.)
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10_000}}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", BASE_DIR / "staticfiles")
# Uploaded files (mail attachments) go to Django's default storage: files under MEDIA_ROOT unless
# STORAGES["default"] names another backend (docs/deploy.md). They are served by the gateway itself,
# after its access check, never straight from MEDIA_ROOT.
MEDIA_ROOT = env.path("MEDIA_ROOT", BASE_DIR / "media")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # One line a record: control characters from outside input escaped, tracebacks indented (gateway/logs.py).
    "formatters": {
        "plain": {
            "class": "gateway.logs.SafeFormatter",
            "format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Quiet libraries that log every connection (and mail addresses) at INFO.
        "amqtt": {"level": "WARNING"},
        "transitions": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},
    },
}
