"""The MQTT adapter server: a client of a real broker that runs an ASGI ``mqtt`` application.

Like daphne owns HTTP connections, this owns one broker connection. Each inbound
PUBLISH on a subscribed topic becomes one application instance (``mqtt`` scope,
one ``mqtt.publish`` event); PUBACK waits for the instance's ``mqtt.ack``.
Instances for one topic start in arrival order, up to ``max_in_flight`` at once
(so an application may store them in batches), and are acknowledged in arrival
order; topics run concurrently. Anything in the project can publish by sending
``mqtt.publish`` events to the channel-layer group ``publish_group``. See docs/mqtt.md.

One bad message costs only itself: an application that fails (raises, times out) for a message is
given ``max_failures`` tries, then the message is handed to the ``park`` hook and acknowledged, so
its topic moves on. An application that answers ``mqtt.retry`` (its infrastructure is down, the
message is fine) is served again with capped backoff, without limit: ``oldest_unacked_age`` tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from channels.layers import get_channel_layer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .. import ASGI_VERSION
from ..routing import find_router
from ..server import ProtocolServer, cancel_and_wait
from .client import AsyncioDriver, client_from_url
from .routing import MqttTopicRouter

logger = logging.getLogger(__name__)

DEFAULT_PUBLISH_GROUP = "mqtt-publish"

ANSWERED, RETRY, FAILED = "answered", "retry", "failed"  # how one application instance ended

MQTT5, MQTT311 = paho.MQTTv5, paho.MQTTv311
UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK (a 3.1.1 broker's "unacceptable protocol version" reads as this)
SESSION_TAKEN_OVER = 142  # DISCONNECT: another client connected with our client id
QUICK_DROPS = 3  # MQTT 3.1.1 has no reason: this many connections in a row dropped soon after CONNACK tell
QUICK_DROP_SECONDS = 10.0
# stop(): how long the connection loop, the relay and its group refresher have to end once cancelled (a
# channel-layer receive can lose a cancellation: protocols.server.cancel_and_wait cancels it again).
STOP_TASKS_SECONDS = 5.0


# The properties a PUBLISH can carry (MQTT 5.0, 3.3.2.3; 8 of the 27), as paho's ``Properties`` names them.
PUBLISH_PROPERTY_NAMES = (
    "PayloadFormatIndicator",
    "MessageExpiryInterval",
    "ContentType",
    "ResponseTopic",
    "CorrelationData",
    "SubscriptionIdentifier",
    "TopicAlias",
    "UserProperty",
)


def publish_properties(properties: Properties | None) -> dict:
    """What ``properties.json()`` gives for a PUBLISH's properties, looking only at the names a PUBLISH can
    carry (``json()`` tries all 27, each name respelled, for every message: a sixth of the adapter's own
    work per message, for a PUBLISH that mostly has none)."""
    if not properties:
        return {}
    found = {name: getattr(properties, name) for name in PUBLISH_PROPERTY_NAMES if hasattr(properties, name)}
    if isinstance(found.get("CorrelationData"), bytes):
        found["CorrelationData"] = found["CorrelationData"].hex()  # as json() gives it
    return found


@dataclass(frozen=True)
class ParkedMessage:
    """A message set aside after its application failed for it too often: what a ``park`` hook gets."""

    scope: dict
    payload: bytes
    reason: str  # why it was parked: "failed 3 times", "failing for 120s"
    error: str  # the last failure: the exception, or the timeout
    attempts: int  # application instances run for it

    @property
    def topic(self) -> str:
        return self.scope["topic"]


async def log_parked(parked: ParkedMessage) -> None:
    """The default ``park`` hook: an ERROR in the log, and nothing kept."""
    logger.error(
        "Parked the MQTT message on %s (%d bytes) after %s: %s",
        parked.topic,
        len(parked.payload),
        parked.reason,
        parked.error,
    )


class MqttServer(ProtocolServer):
    """Subscribe to what the application's ``MqttTopicRouter`` routes, and serve each message."""

    def __init__(
        self,
        application: Any,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        client_id: str = "",
        persistent: bool | None = None,
        protocol: int | None = None,
        session_expiry: int = 86400,
        connect_timeout: float = 10.0,
        shared_group: str | None = None,
        topics: list[str] | None = None,
        qos: int = 1,
        keepalive: int = 30,
        max_payload: int = 256 * 1024,
        application_timeout: float = 30.0,
        max_in_flight: int = 100,
        publish_group: str | None = DEFAULT_PUBLISH_GROUP,
        claim: Callable[[dict], Awaitable[bool]] | None = None,
        group_refresh: float = 60.0,
        channel_layer_alias: str = "default",
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_failures: int = 3,
        park_after: float = 300.0,
        park: Callable[[ParkedMessage], Awaitable[None]] = log_parked,
        fast_client: bool = False,
    ) -> None:
        self.application = application
        self.url = url
        self.fast_client = fast_client  # the opt-in, paho-2.2.0-only BufferedClient (client.client_from_url)
        self.client_id = client_id or f"asgi-mqtt-{socket.gethostname()}-{os.getpid()}"
        self.router = find_router(application, "mqtt", MqttTopicRouter)
        if topics is None:
            if self.router is None:
                raise ValueError("No MqttTopicRouter for 'mqtt' in the application: pass topics= explicitly")
            topics = self.router.subscriptions()
        self.topics = topics
        # A fixed client id means a persistent session: the broker keeps what arrives while we are away.
        self.persistent = bool(client_id) if persistent is None else persistent
        # None: MQTT 5, and 3.1.1 for a broker that refuses it (CONNACK "unsupported protocol version").
        self.protocol = protocol or MQTT5
        self._protocol_fixed = protocol is not None
        self.session_expiry = session_expiry  # MQTT 5: seconds the broker keeps the session while we are away
        self.connect_timeout = connect_timeout  # for the CONNACK
        self._spoke_mqtt5 = False  # this broker has accepted MQTT 5: a late CONNACK is not a reason to fall back
        self.session_conflict = ""  # why we believe another client uses our client id ("": we don't)
        self._quick_drops = 0
        self._connected_at = 0.0
        self._switch_protocol = False
        self._lost_reason = ""
        # Several adapters in one shared-subscription group split the messages between them.
        self.shared_group = shared_group
        self.filters = [f"$share/{shared_group}/{topic}" for topic in topics] if shared_group else list(topics)
        self.qos = qos
        self.keepalive = keepalive
        self.max_payload = max_payload
        self.application_timeout = application_timeout
        self.max_in_flight = max_in_flight
        self.publish_group = publish_group
        self.claim = claim  # several adapters hear each event: the one whose claim succeeds publishes it
        self.group_refresh = group_refresh
        self.channel_layer_alias = channel_layer_alias
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.max_failures, self.park_after, self.park = max_failures, park_after, park
        self.parked = 0  # messages handed to ``park`` and acknowledged
        self.retries = 0  # instances that answered mqtt.retry
        self.failures = 0  # instances that raised or timed out
        self.connected = False
        self._stopping = False
        self._was_connected = False
        self.reconnects = 0
        self._generation = 0  # bumps on every (re)connection: acks never cross connections
        self._queues: dict[str, deque] = {}  # topic -> (generation, message, arrival time), not started
        self._in_flight: dict[str, deque] = {}  # topic -> (generation, message, arrival time, task), started
        self._tasks: set[asyncio.Task] = set()
        self._deadlines: dict[asyncio.Task, float] = {}  # instances running -> when they time out
        self._expired: set[asyncio.Task] = set()  # instances the watchdog cancelled
        self._watchdog: asyncio.Task | None = None
        self._runner: asyncio.Task | None = None
        self._relay: asyncio.Task | None = None
        self._refresher: asyncio.Task | None = None
        self._driver: AsyncioDriver | None = None
        self._client: paho.Client = None  # type: ignore[assignment]  # made by start()

    # Lifecycle

    async def start(self) -> None:
        """Begin connecting (and reconnecting, with backoff) in the background."""
        loop = asyncio.get_running_loop()
        self._make_client()
        self._lost = asyncio.Event()
        self._answered = asyncio.Event()  # a CONNACK came, accepting or not
        self._ready = asyncio.Event()  # connected and subscribed
        self._runner = loop.create_task(self._connection_loop())
        channel = await self._join_publish_group()
        if channel:
            self._relay = loop.create_task(self._relay_events(channel))
            self._refresher = loop.create_task(self._stay_in_group(channel))

    def _make_client(self) -> None:
        """A paho client for ``self.protocol`` (a new one when falling back: paho's version is fixed)."""
        if self._driver is not None:
            self._driver.close()
        options = {} if self.protocol == MQTT5 else {"clean_session": not self.persistent}
        self._client, self._host, self._port = client_from_url(
            self.url, self.client_id, fast=self.fast_client, manual_ack=True, protocol=self.protocol, **options
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.max_queued_messages_set(10_000)
        # Publications go out at once, however many await their PUBACK: paho's default of 20 in flight
        # would hold the relay's batches back, and walk the queue again on every PUBACK.
        self._client.max_inflight_messages_set(0)
        self._driver = AsyncioDriver(self._client, asyncio.get_running_loop())

    def _connect_options(self) -> dict:
        """MQTT 5: clean start or not, and how long the broker keeps the session (0: it ends with the
        connection). MQTT 3.1.1 says it with clean_session, given to the client."""
        if self.protocol != MQTT5:
            return {}
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry if self.persistent else 0
        return {"clean_start": not self.persistent, "properties": properties}

    @property
    def protocol_name(self) -> str:
        return "MQTT 5" if self.protocol == MQTT5 else "MQTT 3.1.1"

    @property
    def oldest_unacked_age(self) -> float:
        """Seconds since the oldest message in hand (not yet acknowledged) arrived; 0 when none.

        Each topic acknowledges in arrival order, so its oldest is the first of its window, or of its
        queue: a look at each busy topic's head, no timer per message."""
        try:
            heads = [entries[0][2] for entries in tuple(self._in_flight.values()) if entries]
            heads += [
                queue[0][2] for topic, queue in tuple(self._queues.items()) if queue and not self._in_flight.get(topic)
            ]
        except IndexError:  # a head went while we looked (a reader in another thread, as /metrics is): again
            return self.oldest_unacked_age
        return time.monotonic() - min(heads) if heads else 0.0

    @property
    def ready(self) -> bool:
        """Connected, and the broker granted the subscriptions (or there are none)."""
        return self._ready.is_set() if self._client is not None else False

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (protocols' public API)
        """Wait until the broker has acknowledged the subscriptions."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Take no more messages; finish (and acknowledge) those in hand; disconnect cleanly.

        In a shared group, leave it first: the broker keeps giving an absent member its share (queued
        in its session until it returns), so a member that stops sends the group's messages to the
        others. Messages keep being taken until the broker has confirmed the leaving (its UNSUBACK):
        one that arrived just before would otherwise wait in this member's session, for a return that
        may never come. A subscription of our own stays: the session keeps what arrives for the next start."""
        if self.shared_group and self.connected and self._client is not None:
            await self._leave_group()
        self._stopping = True
        background = [task for task in (self._runner, self._relay, self._refresher) if task is not None]
        if await cancel_and_wait(background, STOP_TASKS_SECONDS):
            logger.error("MQTT adapter tasks still running %.0fs after their cancellation", STOP_TASKS_SECONDS)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=drain_timeout)
        if self.connected and self._client is not None:
            self._lost.clear()
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 2)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._driver is not None:  # None: stop() after a start that never happened
            self._driver.close()

    async def _leave_group(self, seconds: float = 2.0) -> None:
        left = asyncio.Event()
        self._client.on_unsubscribe = lambda *args: left.set()
        self._client.unsubscribe(self.filters)
        try:
            await asyncio.wait_for(left.wait(), seconds)
        except TimeoutError:
            logger.warning("No UNSUBACK from the MQTT broker in %.0fs: stopping all the same", seconds)

    def _started_driver(self) -> AsyncioDriver:
        if self._driver is None:
            raise RuntimeError("MqttServer.start() makes the driver")
        return self._driver

    async def _connection_loop(self) -> None:
        delay = self.min_backoff
        while True:
            self._lost.clear()
            self._answered.clear()
            try:
                await self._started_driver().connect(self._host, self._port, self.keepalive, **self._connect_options())
            except (OSError, ValueError) as exc:
                logger.warning(
                    "MQTT broker %s:%s unreachable (%s); retrying in %.1fs", self._host, self._port, exc, delay
                )
            else:
                try:
                    await asyncio.wait_for(self._answered.wait(), self.connect_timeout)
                except TimeoutError:
                    self._no_connack()
                await self._lost.wait()
                if self._switch_protocol:  # the broker speaks 3.1.1 only: again at once, in its version
                    self._switch_protocol = False
                    self._make_client()
                    continue
                if self._was_connected and not self.session_conflict:
                    delay = self.min_backoff  # with a conflict, the delay grows: no reconnect storm
                logger.warning(
                    "MQTT connection to %s:%s lost (%s); reconnecting in %.1fs",
                    self._host,
                    self._port,
                    self._lost_reason,
                    delay,
                )
            await asyncio.sleep(delay)  # backoff between attempts
            delay = min(delay * 2, self.max_backoff)

    def _no_connack(self) -> None:
        """No answer to CONNECT: give up on this connection. A broker that never accepted MQTT 5 may be
        one that cannot read it (amqtt waits for ever on an MQTT 5 CONNECT): then 3.1.1."""
        if self.protocol == MQTT5 and not self._protocol_fixed and not self._spoke_mqtt5:
            logger.warning(
                "MQTT broker %s:%s did not answer an MQTT 5 CONNECT in %.0fs: using 3.1.1",
                self._host,
                self._port,
                self.connect_timeout,
            )
            self.protocol, self._switch_protocol = MQTT311, True
        else:
            logger.warning(
                "MQTT broker %s:%s did not answer CONNECT in %.0fs", self._host, self._port, self.connect_timeout
            )
        self._client.disconnect()

    # paho callbacks (all on the event loop thread)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        self._was_connected = False
        self._answered.set()
        if reason_code.is_failure:
            unsupported = reason_code.value == UNSUPPORTED_PROTOCOL_VERSION
            if unsupported and self.protocol == MQTT5 and not self._protocol_fixed:
                logger.warning("MQTT broker %s:%s does not speak MQTT 5: using 3.1.1", self._host, self._port)
                self.protocol, self._switch_protocol = MQTT311, True
                return
            logger.error("MQTT broker refused connection: %s", reason_code)
            return
        self._generation += 1
        self._was_connected = self.connected = True
        self._connected_at = time.monotonic()
        self._spoke_mqtt5 |= self.protocol == MQTT5
        self.reconnects += self._generation > 1
        if self.filters:
            client.subscribe([(topic, self.qos) for topic in self.filters])
        else:
            self._ready.set()
        resumed = "resumed its session" if flags.session_present else "new session"
        logger.info(
            "MQTT connected to %s:%s as %s (%s, %s)",
            self._host,
            self._port,
            self.client_id,
            self.protocol_name + (", fast client" if self.fast_client else ""),
            resumed,
        )

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode], properties: Any
    ) -> None:
        refused = [topic for topic, code in zip(self.filters, reason_codes, strict=False) if code.is_failure]
        if refused:
            logger.error("MQTT broker refused subscriptions to %s", refused)
        if self.filters and len(refused) == len(self.filters):
            return  # nothing will arrive: not ready, and /healthz keeps saying so
        logger.info("MQTT subscribed to %s", [topic for topic in self.filters if topic not in refused])
        self._ready.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        was_connected, self.connected = self.connected, False
        self._lost_reason = str(reason_code)  # MQTT 5: the broker's reason, when it sent DISCONNECT
        self._ready.clear()
        self._lost.set()
        if was_connected and not self._stopping:
            self._notice_conflict(reason_code)

    def _notice_conflict(self, reason_code: Any) -> None:
        """Two clients with one client id take the session from each other, each reconnect dropping the
        other: say so (log, ``session_conflict``) and back off, rather than storm. MQTT 5 brokers tell
        (DISCONNECT "session taken over"); under 3.1.1, connections dropped soon after CONNACK, a few
        times in a row, do."""
        lasted = time.monotonic() - self._connected_at
        if lasted > 2 * self.max_backoff:  # a connection that long: no other client was taking it
            self.session_conflict = ""
        self._quick_drops = self._quick_drops + 1 if lasted < QUICK_DROP_SECONDS else 0
        if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
            why = "the broker says another client took over the session"
        elif self._quick_drops >= QUICK_DROPS:
            why = f"the broker dropped the connection {self._quick_drops} times in a row soon after connecting"
        else:
            return
        self.session_conflict = f"client id {self.client_id} in use by another client: {why}"
        logger.error(
            "MQTT %s. Give each adapter its own id (unset MQTT_CLIENT_ID for a unique default); backing off",
            self.session_conflict,
        )

    @property
    def conflict(self) -> str:
        """``session_conflict`` until a connection has lasted well past the longest backoff (the other
        client would have taken the session back by then)."""
        if self.session_conflict and self.connected and time.monotonic() - self._connected_at > 2 * self.max_backoff:
            self.session_conflict, self._quick_drops = "", 0
        return self.session_conflict

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._stopping:
            return  # not taken, so not acknowledged: a persistent session gets it again
        queue = self._queues.get(message.topic)
        if queue is None:
            queue = self._queues[message.topic] = deque()
            task = asyncio.get_running_loop().create_task(self._drain(message.topic, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append((self._generation, message, time.monotonic()))

    # Serving messages

    async def _drain(self, topic: str, queue: deque) -> None:
        """Start the topic's messages in order, a window of them at once; acknowledge them in order."""
        in_flight: deque[tuple[int, paho.MQTTMessage, float, asyncio.Task]] = deque()
        self._in_flight[topic] = in_flight
        loop = asyncio.get_running_loop()
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.max_in_flight:
                    generation, message, arrived = queue.popleft()
                    previous = in_flight[-1][3] if in_flight else None
                    task = loop.create_task(self.serve_message(message, previous))
                    in_flight.append((generation, message, arrived, task))
                generation, message, _, task = in_flight[0]  # kept in the window until acknowledged
                await task
                in_flight.popleft()
                self.acknowledge(message, generation)
        finally:
            for _, _, _, task in in_flight:  # cancelled while serving: unacknowledged, so the broker resends
                task.cancel()
            del self._queues[topic], self._in_flight[topic]

    def scope_for(self, message: paho.MQTTMessage) -> dict:
        return {
            "type": "mqtt",
            "asgi": ASGI_VERSION,
            "topic": message.topic,
            "qos": message.qos,
            "retain": bool(message.retain),
            "dup": bool(message.dup),
            "properties": publish_properties(message.properties),
            "client_id": self.client_id,
        }

    async def serve_message(self, message: paho.MQTTMessage, previous: asyncio.Task | None = None) -> None:
        """Serve ``message`` until the application answers, or it is parked.

        An instance that answers ``mqtt.retry`` is run again with backoff, as often as it takes. One
        that fails (raises, times out) is run again up to ``max_failures`` tries in all, or until
        ``park_after`` seconds have passed since the first; then the message goes to the ``park`` hook
        and is done with. If the hook fails, the message is kept and served again. Tries after the
        first wait until the message before it on the topic (``previous``) is served: retries go in
        arrival order. The message is only acknowledged once done with, and acknowledgements of later
        messages wait for it.
        """
        if len(message.payload) > self.max_payload:
            reason = f"payload of {len(message.payload)} bytes over {self.max_payload}"
        elif self.router is not None and self.router.resolve(message.topic) is None:
            reason = "no route for this topic"
        else:
            reason = None
        if reason is not None:
            logger.warning("Rejected MQTT message on %s: %s", message.topic, reason)
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = self.min_backoff
        attempts = failures = 0
        while True:
            outcome, error = await self._run(message)
            attempts += 1
            if outcome == ANSWERED:
                return
            if outcome == RETRY:
                self.retries += 1
            else:
                self.failures += 1
                failures += 1
                waited = loop.time() - started
                if failures >= self.max_failures or waited >= self.park_after:
                    why = f"failed {failures} times" if failures >= self.max_failures else f"failing for {waited:.0f}s"
                    if await self._park(message, why, error, attempts):
                        return
            if previous is not None:
                await asyncio.wait([previous])  # not cancelled with us: it is the topic's
                previous = None
            logger.warning("Will serve the message on %s again in %.1fs", message.topic, delay)
            await asyncio.sleep(delay)  # backoff before the retry
            delay = min(delay * 2, self.max_backoff)

    async def _park(self, message: paho.MQTTMessage, reason: str, error: str, attempts: int) -> bool:
        """Hand ``message`` to the ``park`` hook: True once it took it (within ``application_timeout``:
        a hook hanging on a database that does not answer must not hold the topic forever either)."""
        parked = ParkedMessage(self.scope_for(message), bytes(message.payload), reason, error, attempts)
        try:
            await asyncio.wait_for(self.park(parked), self.application_timeout)
        except Exception:
            logger.exception("Could not park the MQTT message on %s; keeping it", message.topic)
            return False
        self.parked += 1
        return True

    def acknowledge(self, message: paho.MQTTMessage, generation: int) -> None:
        if generation == self._generation and self.connected:
            self._client.ack(message.mid, message.qos)
        # else: the connection it came on is gone; a persistent session gets it again (keys dedupe it)

    async def _run(self, message: paho.MQTTMessage) -> tuple[str, str]:
        """One application instance for ``message``: how it ended (``ANSWERED``: ack or reject,
        ``RETRY``, ``FAILED``) and, unless answered, why."""
        answer = None
        retry_reason = ""

        async def send(event: dict) -> None:
            nonlocal answer, retry_reason
            kind = event["type"]
            if kind == "mqtt.publish":
                self.publish(event)
            elif kind in ("mqtt.ack", "mqtt.reject", "mqtt.retry"):
                if answer is None and kind == "mqtt.reject":
                    logger.warning("Rejected MQTT message on %s: %s", message.topic, event.get("reason", ""))
                if answer is None and kind == "mqtt.retry":
                    retry_reason = str(event.get("reason", ""))
                    logger.warning("MQTT message on %s to be served again: %s", message.topic, retry_reason)
                answer = answer or kind
            else:
                raise ValueError(f"Unknown event type for mqtt scope: {kind!r}")

        def ended(error: str) -> tuple[str, str]:
            if answer == "mqtt.retry":
                return RETRY, retry_reason
            return (ANSWERED, "") if answer is not None else (FAILED, error)

        event: dict | None = {"type": "mqtt.publish", "payload": message.payload}

        async def receive() -> dict:
            nonlocal event
            if event is None:  # one event per instance: a second receive waits for the timeout
                await asyncio.get_running_loop().create_future()
            given, event = event, None
            return given  # type: ignore[return-value]  # None only after the first

        # The instance runs in this task (the message's). Its deadline is kept in a table that one
        # watchdog looks through, rather than a timer of its own (a timer per message costs more).
        task: asyncio.Task = asyncio.current_task()  # type: ignore[assignment]  # served in a task
        self._deadlines[task] = asyncio.get_running_loop().time() + self.application_timeout
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        try:
            await self.application(self.scope_for(message), receive, send)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # not the watchdog's: stopping
            self._expired.discard(task)
            if task.uncancel() > 0:
                raise  # stopping as well: that wins
            error = f"no answer within {self.application_timeout:.1f}s"
            logger.error("MQTT application failed on %s: %s", message.topic, error)
            return ended(error)
        except Exception as exc:
            logger.exception("MQTT application failed on %s", message.topic)
            return ended(f"{type(exc).__name__}: {exc}")
        finally:
            del self._deadlines[task]
            if task in self._expired:  # the application swallowed the watchdog's cancellation
                self._expired.discard(task)
                task.uncancel()
        if answer is None:
            logger.error("MQTT application gave no ack or reject for a message on %s; acknowledging", message.topic)
        return ended("")

    async def _watch(self) -> None:
        """Cancel the instances that run past their deadline; a tenth of ``application_timeout``
        (at most a second) between looks. Ends when no instance runs."""
        interval = min(1.0, self.application_timeout / 10)
        loop = asyncio.get_running_loop()
        try:
            while self._deadlines:
                await asyncio.sleep(interval)
                now = loop.time()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watchdog = None

    # Publishing

    def publish(self, event: dict) -> None:
        payload = event["payload"]
        if isinstance(payload, str):
            payload = payload.encode()
        self._client.publish(event["topic"], payload, event.get("qos", 0), event.get("retain", False))

    async def _join_publish_group(self) -> str | None:
        """This adapter's channel, in the group ``publish_group`` (None: no layer, no relay)."""
        layer = get_channel_layer(self.channel_layer_alias)
        if layer is None or not self.publish_group:
            return None
        channel = await layer.new_channel("mqtt-relay")
        try:
            await layer.group_add(self.publish_group, channel)
        except Exception as exc:  # the layer is down: the relay joins again later
            logger.warning("Could not join %s (%s); will try again", self.publish_group, exc)
        return channel

    async def _relay_events(self, channel: str) -> None:
        """Publish what the rest of the project sends to the group ``publish_group``, until stopped:
        cancelled, or, should the cancellation be lost in a layer call (``stop()``), at the next event."""
        layer = get_channel_layer(self.channel_layer_alias)
        delay = self.min_backoff
        while not self._stopping:
            try:
                event = await layer.receive(channel)
                delay = self.min_backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Channel layer receive failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)  # backoff
                delay = min(delay * 2, self.max_backoff)
                continue
            await self._publish_event(event)

    async def _stay_in_group(self, channel: str) -> None:
        """Join again now and then: memberships expire, and a restarted Redis forgot them."""
        layer = get_channel_layer(self.channel_layer_alias)
        while not self._stopping:
            await asyncio.sleep(self.group_refresh)
            try:
                await layer.group_add(self.publish_group, channel)
            except Exception as exc:
                logger.warning("Could not join %s again (%s)", self.publish_group, exc)

    async def _publish_event(self, event: dict) -> None:
        """``mqtt.publish``, or ``mqtt.publish.many`` with a list of them in ``messages`` (one layer
        message and one claim for a whole batch)."""
        kind = event.get("type")
        if kind == "mqtt.publish":
            publications = [event]
        elif kind == "mqtt.publish.many" and isinstance(event.get("messages"), list):
            publications = event["messages"]
        else:
            logger.warning("Ignored %r sent to group %s", kind, self.publish_group)
            return
        try:
            claimed = self.claim is None or await self.claim(event)
        except Exception:  # rather twice than never
            logger.exception("Could not claim an event from %s; publishing it anyway", self.publish_group)
            claimed = True
        if claimed:
            self._publish_all(publications)

    def _publish_all(self, publications: list[dict]) -> None:
        for publication in publications:
            try:
                self.publish(publication)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a bad one must not end the relay
                logger.warning("Could not publish an event from %s: %r", self.publish_group, exc)

    def publish_here(self, publications: list[dict]) -> bool:
        """Publish ``mqtt.publish`` events through this adapter's connection now, as its relay would
        from the group, for code in the adapter's own process: no channel-layer round trip, no claim.
        False, and nothing published, while the adapter is not connected or is stopping: send them
        to the group then, for an adapter that is."""
        if self._stopping or not self.connected or self._client is None:
            return False
        self._publish_all(publications)
        return True
