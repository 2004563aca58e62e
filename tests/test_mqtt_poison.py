"""Poison messages over a real broker: an application that keeps failing for one message gets it
parked and acknowledged, so its topic (and the broker's in-flight window, which every topic shares)
moves on; ``mqtt.retry`` is served again without being parked; a park hook that fails keeps it."""

from __future__ import annotations

import asyncio

from protocols.mqtt import MqttServer, ParkedMessage
from tests.support import apublish, unique


class Served:
    """An ``mqtt`` application: raises for payloads in ``poison``, answers ``mqtt.retry`` for the first
    ``retries`` tries of each payload in ``flaky``, acknowledges the rest; remembers every try."""

    def __init__(self, poison: tuple[bytes, ...] = (), flaky: tuple[bytes, ...] = (), retries: int = 0) -> None:
        self.poison, self.flaky, self.retries = poison, flaky, retries
        self.tries: list[bytes] = []
        self.acked: list[tuple[str, bytes]] = []
        self.changed = asyncio.Condition()

    async def __call__(self, scope, receive, send) -> None:
        payload = (await receive())["payload"]
        self.tries.append(payload)
        if payload in self.poison:
            raise ValueError(f"cannot handle {payload!r}")
        if payload in self.flaky and self.tries.count(payload) <= self.retries:
            await send({"type": "mqtt.retry", "reason": "database unavailable"})
            return
        await send({"type": "mqtt.ack"})
        async with self.changed:
            self.acked.append((scope["topic"], payload))
            self.changed.notify_all()

    async def wait_acked(self, count: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.acked) >= count)


class Parking:
    """A ``park`` hook that fails its first ``failing`` calls (the database is down), then keeps them."""

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self.calls: list[ParkedMessage] = []
        self.parked: list[ParkedMessage] = []
        self.changed = asyncio.Condition()

    async def __call__(self, parked: ParkedMessage) -> None:
        self.calls.append(parked)
        if len(self.calls) <= self.failing:
            raise ConnectionError("dead-letter table unavailable")
        async with self.changed:
            self.parked.append(parked)
            self.changed.notify_all()

    async def wait_parked(self, count: int, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.parked) >= count)


async def all_acknowledged(server: MqttServer, timeout: float = 10) -> None:
    """Wait until the adapter holds no unacknowledged message (its ack follows the answer)."""
    async with asyncio.timeout(timeout):
        while server.oldest_unacked_age > 0:
            await asyncio.sleep(0.02)  # polling the adapter's state with a deadline


async def served(application, mosquitto: str, **options) -> MqttServer:
    options = {"publish_group": None, "min_backoff": 0.02, "max_backoff": 0.1, **options}
    server = MqttServer(application, mosquitto, **options)
    await server.start()
    await server.wait_ready(10)
    return server


async def test_a_poison_message_is_parked_and_the_topic_and_the_broker_window_move_on(mosquitto):
    base = unique("poison")
    client_id = unique("poison-adapter")
    application, parking = Served(poison=(b"poison",)), Parking()
    server = await served(application, mosquitto, topics=[f"{base}/#"], client_id=client_id, park=parking)
    try:
        await apublish(mosquitto, f"{base}/a", b"poison")
        # More than Mosquitto's in-flight window (20) behind it on its topic, then another topic's.
        after = [f"a{n}".encode() for n in range(30)]
        for payload in after:
            await apublish(mosquitto, f"{base}/a", payload)
        await apublish(mosquitto, f"{base}/b", b"other topic")
        await application.wait_acked(len(after) + 1)
        await parking.wait_parked(1)
        await all_acknowledged(server)  # every message, the poison one too
    finally:
        await server.stop()
    [parked] = parking.parked
    assert (parked.topic, parked.payload, parked.attempts) == (f"{base}/a", b"poison", 3)
    assert parked.reason == "failed 3 times" and parked.error == "ValueError: cannot handle b'poison'"
    assert application.tries.count(b"poison") == 3
    assert sorted(payload for topic, payload in application.acked if topic == f"{base}/a") == sorted(after)
    assert (server.parked, server.failures, server.retries) == (1, 3, 0)

    # The broker agrees: the persistent session has nothing left to deliver again.
    recorder = Served()
    server = await served(recorder, mosquitto, topics=[f"{base}/#"], client_id=client_id)
    try:
        await apublish(mosquitto, f"{base}/a", b"marker")
        await recorder.wait_acked(1)
    finally:
        await server.stop()
    assert recorder.tries == [b"marker"]


async def test_a_message_failing_past_the_time_budget_is_parked_before_max_failures(mosquitto):
    base = unique("budget")
    application, parking = Served(poison=(b"poison",)), Parking()
    server = await served(application, mosquitto, topics=[f"{base}/#"], park=parking, max_failures=1000, park_after=0.3)
    try:
        await apublish(mosquitto, f"{base}/a", b"poison")
        await apublish(mosquitto, f"{base}/a", b"after")
        await parking.wait_parked(1)
        await application.wait_acked(1)
    finally:
        await server.stop()
    [parked] = parking.parked
    assert parked.reason.startswith("failing for") and 1 < parked.attempts < 1000


async def test_mqtt_retry_is_served_again_until_it_succeeds_and_never_parked(mosquitto):
    base = unique("retry")
    application, parking = Served(flaky=(b"later",), retries=5), Parking()
    server = await served(application, mosquitto, topics=[f"{base}/#"], park=parking, max_failures=2)
    try:
        await apublish(mosquitto, f"{base}/a", b"later")
        await apublish(mosquitto, f"{base}/a", b"next")
        await application.wait_acked(2)
    finally:
        await server.stop()
    assert application.tries.count(b"later") == 6  # five retries, more than max_failures: not failures
    assert parking.calls == [] and (server.parked, server.failures, server.retries) == (0, 0, 5)
    assert sorted(payload for _, payload in application.acked) == [b"later", b"next"]


async def test_a_park_hook_that_fails_keeps_the_message_until_it_is_parked(mosquitto):
    base = unique("keep")
    application, parking = Served(poison=(b"poison",)), Parking(failing=2)
    server = await served(application, mosquitto, topics=[f"{base}/#"], park=parking)
    try:
        await apublish(mosquitto, f"{base}/a", b"poison")
        await apublish(mosquitto, f"{base}/a", b"after")
        await parking.wait_parked(1)
        await application.wait_acked(1)
        await all_acknowledged(server)
    finally:
        await server.stop()
    # Kept while the hook failed: served again (and failing again) before each new try to park it.
    assert [call.attempts for call in parking.calls] == [3, 4, 5]
    assert application.tries.count(b"poison") == 5 and server.parked == 1


async def test_a_message_answered_with_retry_ages_until_it_is_acknowledged(mosquitto):
    base = unique("stuck")
    release = asyncio.Event()

    async def database_down(scope, receive, send):
        await receive()
        await send({"type": "mqtt.ack" if release.is_set() else "mqtt.retry", "reason": "database unavailable"})

    server = await served(database_down, mosquitto, topics=[f"{base}/#"])
    try:
        assert server.oldest_unacked_age == 0.0
        await apublish(mosquitto, f"{base}/a", b"waiting")
        async with asyncio.timeout(10):
            while server.oldest_unacked_age < 0.5:  # polling the age with a deadline
                await asyncio.sleep(0.05)
        assert server.retries >= 2 and server.failures == 0
        release.set()
        await all_acknowledged(server)  # once the database is back
    finally:
        await server.stop()
    assert server.parked == 0


async def test_a_park_hook_that_hangs_is_given_up_on_and_tried_again(mosquitto):
    base = unique("hang")
    application, parking = Served(poison=(b"poison",)), Parking()
    calls: list[int] = []

    async def hangs_once(parked: ParkedMessage) -> None:  # the database does not answer, the first time
        calls.append(parked.attempts)
        if len(calls) == 1:
            await asyncio.Event().wait()
        await parking(parked)

    server = await served(application, mosquitto, topics=[f"{base}/#"], park=hangs_once, application_timeout=0.3)
    try:
        await apublish(mosquitto, f"{base}/a", b"poison")
        await parking.wait_parked(1)
        await all_acknowledged(server)
    finally:
        await server.stop()
    assert calls == [3, 4] and server.parked == 1
