"""Build the MQTT and SMTP adapter servers (and, for ``make run``, an embedded broker) from settings."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings

from protocols.mqtt import MqttServer
from protocols.mqtt.server import MQTT5, MQTT311
from protocols.server import cancel_and_wait
from protocols.smtp import SmtpServer

from . import metrics
from .client_ids import claim_client_id
from .deadletters import park_mqtt
from .heap import settle_heap
from .publishing import claim_once, publish_through
from .runtime import Runtime
from .topics import PUBLISH_GROUP, in_topic, out_topic

logger = logging.getLogger(__name__)


BROKER_PROBE_SECONDS = 2.0


async def broker_answers(url: str) -> bool:
    """Whether something accepts a connection at the broker's address within ``BROKER_PROBE_SECONDS``."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(BROKER_PROBE_SECONDS):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or 1883)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


PROTOCOLS = {"auto": None, "5": MQTT5, "3.1.1": MQTT311}  # MQTT_PROTOCOL


def mqtt_protocol(name: str) -> int | None:
    if name not in PROTOCOLS:
        raise ValueError(f"MQTT_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not {name!r}")
    return PROTOCOLS[name]


class Adapters:
    """The protocol servers one process runs beside (or instead of) the ASGI server, serving
    ``application`` (built around ``runtime``: config.asgi.build_application). Whoever made the
    runtime closes it, after ``stop()``."""

    def __init__(
        self,
        application: Any,
        runtime: Runtime,
        *,
        mqtt: bool = True,
        smtp: bool = True,
        embedded_broker: bool = False,
    ) -> None:
        self.application, self.runtime = application, runtime
        self.embedded_broker = embedded_broker
        self.broker = None
        self._unsubscribe_mqtt: Callable[[], None] | None = None
        self.mqtt = (
            MqttServer(
                application,
                settings.MQTT_URL,
                client_id=settings.MQTT_CLIENT_ID or claim_client_id(settings.MQTT_NODE_NAME, settings.MQTT_SLOT_DIR),
                persistent=True,
                protocol=mqtt_protocol(settings.MQTT_PROTOCOL),
                session_expiry=settings.MQTT_SESSION_EXPIRY,
                shared_group=settings.MQTT_SHARED_GROUP or None,
                max_payload=settings.MQTT_MAX_PAYLOAD,
                max_in_flight=settings.MQTT_MAX_IN_FLIGHT,
                claim=claim_once(runtime.layer),
                max_failures=settings.MQTT_MAX_FAILURES,
                park=park_mqtt,
                fast_client=settings.MQTT_FAST_CLIENT,
            )
            if mqtt
            else None
        )
        self.smtp = (
            SmtpServer(
                application,
                settings.BIND,
                settings.SMTP_PORT,
                hostname=settings.EMAIL_DOMAIN,
                data_size_limit=settings.SMTP_MAX_MESSAGE_SIZE,
                idle_timeout=settings.SMTP_IDLE_TIMEOUT,
                session_timeout=settings.SMTP_SESSION_TIMEOUT or None,
                max_recipients=settings.SMTP_MAX_RECIPIENTS,
                max_sessions=settings.SMTP_MAX_SESSIONS,
                max_refused_recipients=settings.SMTP_MAX_REFUSED_RECIPIENTS,
                refused_recipient_rate=settings.SMTP_REFUSED_RECIPIENT_RATE,
                refused_recipient_burst=settings.SMTP_REFUSED_RECIPIENT_BURST,
            )
            if smtp
            else None
        )

    async def start(self) -> None:
        self.runtime.start()  # the loop-lag watch from the start, not only from the first /healthz
        if self.mqtt:
            if self.embedded_broker and not await broker_answers(settings.MQTT_URL):
                from .broker import start_embedded_broker  # amqtt is only imported when needed

                self.broker = await start_embedded_broker(settings.MQTT_URL, settings.MQTT_EMBEDDED_BROKER)
                logger.info(
                    "No MQTT broker answered at %s: started an embedded %s there",
                    redacted(settings.MQTT_URL),
                    self.broker.name,
                )
                if not self.broker.mqtt5 and self.mqtt.protocol == MQTT5:
                    self.mqtt.protocol = MQTT311  # known: no MQTT 5 attempt to wait out
            await self.mqtt.start()
            if self.mqtt.publish_group == PUBLISH_GROUP:  # what this process stores, its adapter publishes
                self._unsubscribe_mqtt = self.runtime.rooms.stored.subscribe(publish_through(self.mqtt), first=True)
            metrics.adapter_reconnects.set_function(lambda: self.mqtt.reconnects)
            metrics.mqtt_retries.set_function(lambda: self.mqtt.retries)
            metrics.mqtt_failures.set_function(lambda: self.mqtt.failures)
            metrics.mqtt_oldest_unacked.set_function(lambda: self.mqtt.oldest_unacked_age)
            self.runtime.probes["mqtt"] = self._mqtt_health
        if self.smtp:
            await self.smtp.start()
            self.runtime.probes["smtp"] = lambda: (
                self.smtp.listening,
                "listening" if self.smtp.listening else "stopped",
            )
            self.runtime.probes["mail_readers"] = self.runtime.mail_readers.health

    def _mqtt_health(self) -> tuple[bool, str]:
        if self.mqtt.conflict:
            return False, self.mqtt.conflict
        if not self.mqtt.connected:
            return False, "disconnected"
        if not self.mqtt.ready:
            return False, "connected, but no subscription was granted"
        age = self.mqtt.oldest_unacked_age
        # A message that cannot be stored holds its topic (and the broker's in-flight window).
        if age > settings.MQTT_STUCK_SECONDS:
            return False, f"stuck: a message unacknowledged for {age:.0f}s"
        return True, "connected"

    async def stop(self) -> None:
        if self.smtp:
            await self.smtp.stop()
        if self.mqtt:
            if self._unsubscribe_mqtt is not None:
                self._unsubscribe_mqtt()
                self._unsubscribe_mqtt = None
            await self.mqtt.stop()
        if self.broker is not None:
            await self.broker.shutdown()

    def banner(self) -> list[str]:
        lines = []
        if self.smtp:
            lines.append(f"  SMTP       {settings.BIND}:{self.smtp.port}   mail to <room>@{settings.EMAIL_DOMAIN}")
        if self.mqtt:
            broker = f"embedded {self.broker.name}" if self.broker else "broker"
            url = redacted(settings.MQTT_URL)
            post, device, hear = in_topic("<room>"), in_topic("<room>", "<device>"), out_topic("<room>")
            topics = f"publish to {post} (a device: {device}), hear {hear}"
            lines.append(f"  MQTT       {url} ({broker})   {topics}")
        layer = f"Redis {redacted(settings.REDIS_URL)}" if settings.REDIS_URL else "in-memory (this process only)"
        if settings.REDIS_SENTINELS:
            layer = f"{layer} through the sentinels {','.join(settings.REDIS_SENTINELS)}"
        database = settings.DATABASES["default"]
        lines.append(f"  Channels   {layer}")
        lines.append(f"  Database   {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}")
        return lines


def redacted(urls: str) -> str:
    """``urls`` (one URL, or several comma-separated) fit for a log or a banner: every password, in the
    user part or in the query (redis-py takes ``?password=``), shown as ``***``."""
    return ",".join(_redacted_url(url) for url in urls.split(","))


def _redacted_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"  # not a URL we can take apart: show none of it
    netloc = parts.netloc
    if password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if "pass" in query.lower():
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, "***" if "pass" in key.lower() else value) for key, value in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


LEFTOVER_SECONDS = 5.0  # after the adapters stopped: what is still running then is cancelled, and waited for this long


async def run_until_signalled(adapters: Adapters, title: str) -> None:
    """Start, print a banner, run until SIGINT or SIGTERM, stop cleanly (the adapters, then their runtime)."""
    import signal

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await adapters.start()
    settle_heap()
    print("\n".join([title, *adapters.banner(), "Quit with Ctrl-C."]), flush=True)
    await stopping.wait()
    await adapters.stop()
    await adapters.runtime.close()
    await end_leftover_tasks(LEFTOVER_SECONDS)


def awaiting(task: asyncio.Task) -> str:
    """Where ``task`` waits, one line per coroutine down the chain of awaits to what it waits for
    (``Task.print_stack`` shows the task's own frame only: not the library call that holds it)."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # a future, or a coroutine that is running or done
            lines.append(f"  {awaited!r}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)


async def end_leftover_tasks(seconds: float) -> None:
    """Cancel what still runs once the adapters have stopped (its messages are stored and acknowledged,
    or unacknowledged and the broker's to send again) and wait for it, at most ``seconds``, cancelling
    again what lost its cancellation (``cancel_and_wait``). A task that will not end is logged with
    where it waits, and the process ends without it: ``asyncio.run`` would wait for it forever, and a
    stop must not outlast a service manager's timeout."""
    current = asyncio.current_task()
    pending = await cancel_and_wait([task for task in asyncio.all_tasks() if task is not current], seconds)
    if pending:
        for task in pending:
            logger.error(
                "A task did not end %.0fs after the adapters stopped: %r\nWaiting in:\n%s",
                seconds,
                task,
                awaiting(task),
            )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
