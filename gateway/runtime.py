"""What a gateway process holds while it runs, in one object built at start-up and handed to the ASGI
application, which puts it in every scope (``scope["runtime"]``; Django views read ``request.scope``).

Nothing else in the gateway keeps state between requests at module level: no singletons, no
registries by event loop. A process (``rungateway``, ``runmqtt``, ``runsmtp``, or ``config.asgi``
under a plain ASGI server) builds one, and the commands close it when they stop; each test builds
its own (tests/conftest.py, the ``runtime`` fixture). Module level keeps only constants, compiled
patterns, and Prometheus's process-wide metrics.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from fanout.hub import Hub

from .access import Verdicts, mail_rules
from .answers import RecentAnswers
from .devices import MqttRules, mqtt_rules
from .hub import make_hub
from .limits import Limits
from .loop_lag import LoopLag
from .mail_workers import MailReaders
from .models import Room
from .presence import PresenceTracker
from .rooms import RoomService

SCOPE_KEY = "runtime"
RULES_SECONDS = 2.0  # how long a room's MQTT and mail rules are kept: a change applies within this

Probe = Callable[[], tuple[bool, str]]  # for /healthz: (ok, detail)


class Runtime:
    """One process's live state: the room service (its writers, its bus of stored batches, its live
    pacing), the fan-out hub, presence, rate limits, the access and rules caches, the mail readers,
    the event loop's lag watch and the health probes of the adapters running here.

    Built outside an event loop or in one; it starts tasks only when used, in the loop it is used
    in, so one runtime serves one event loop."""

    def __init__(self, layer: Any = None) -> None:
        self.layer = get_channel_layer() if layer is None else layer
        self.limits = Limits()
        self.rooms = RoomService(self.layer, self.limits)
        self.hub: Hub = make_hub(self.layer)
        self.presence = PresenceTracker(self.layer)
        self.verdicts = Verdicts()
        # "Whom does the room take MQTT posts from?" (and by mail, at its open address), asked once in
        # a while rather than on every message (the messages that arrive during a lookup share it).
        self.mqtt_rules: RecentAnswers[MqttRules] = RecentAnswers(database_sync_to_async(mqtt_rules), RULES_SECONDS)
        self.mail_rules: RecentAnswers[Room | None] = RecentAnswers(database_sync_to_async(mail_rules), RULES_SECONDS)
        self.mqtt_turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.mail_readers = MailReaders()
        self.probes: dict[str, Probe] = {}  # the adapters running here (gateway.adapters)
        self._loop_lag: LoopLag | None = None

    @property
    def loop_lag(self) -> LoopLag:
        """How late the event loop runs, watched from the first use (``start``) on."""
        if self._loop_lag is None:
            self._loop_lag = LoopLag(asyncio.get_running_loop())
        return self._loop_lag

    def start(self) -> None:
        """In the event loop it serves: what runs from the start (the loop-lag watch)."""
        self.loop_lag  # noqa: B018 (starts the watch)

    async def close(self) -> None:
        """Stop its tasks and the mail readers' processes: the process is stopping."""
        self.hub.close()
        await self.presence.close()
        if self._loop_lag is not None:
            self._loop_lag.stop()
        await asyncio.to_thread(self.mail_readers.shutdown)


def runtime_of(scope: dict) -> Runtime:
    """The runtime of the application that was given ``scope`` (``build_application``'s)."""
    try:
        return scope[SCOPE_KEY]
    except KeyError:
        raise LookupError("no runtime in the scope: serve config.asgi's application (build_application)") from None


ASGIApp = Callable[[dict, Any, Any], Awaitable[None]]


class WithRuntime:
    """ASGI middleware: ``inner`` with the runtime in every scope it is given (a copy: the server's
    stays as it was). ``inner`` is where ``protocols.routing.find_router`` looks past it."""

    def __init__(self, inner: ASGIApp, runtime: Runtime) -> None:
        self.inner, self.runtime = inner, runtime

    @markcoroutinefunction
    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[None]:
        """The inner application's coroutine, not a frame of its own around it: a long-lived
        connection keeps no copy of the scope here (consumers/lean.py)."""
        return self.inner({**scope, SCOPE_KEY: self.runtime}, receive, send)
