"""The MQTT adapter in this process against the real broker: scopes, answers, and the publish channel."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer

from consumers.mqtt import RoomMqttConsumer
from gateway.runtime import WithRuntime
from gateway.topics import PUBLISH_GROUP, in_topic, out_topic, room_group
from protocols.mqtt import AsyncMqttConsumer, MqttServer
from protocols.server import cancel_and_wait
from tests.support import MqttListener, apublish, record_group_sends, unique


class Recorder:
    """An ``mqtt`` application that acknowledges and remembers what it was given."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue = asyncio.Queue()

    async def __call__(self, scope, receive, send) -> None:
        event = await receive()
        await self.seen.put((scope, event))
        await send({"type": "mqtt.ack"})


async def served(application, mosquitto: str, **options) -> MqttServer:
    server = MqttServer(application, mosquitto, **options)
    await server.start()
    await server.wait_ready(10)
    return server


async def test_publish_becomes_a_scope_and_event(mosquitto):
    base = unique("adapter")
    recorder = Recorder()
    server = await served(recorder, mosquitto, topics=[f"{base}/#"], publish_group=None)
    try:
        await apublish(mosquitto, f"{base}/a", b"\x00\x01 bytes", qos=1)
        scope, event = await asyncio.wait_for(recorder.seen.get(), 10)
    finally:
        await server.stop()
    assert (scope["type"], scope["topic"], scope["qos"], scope["retain"]) == ("mqtt", f"{base}/a", 1, False)
    assert event == {"type": "mqtt.publish", "payload": b"\x00\x01 bytes"}


async def test_retained_replay_is_marked_and_not_posted(mosquitto, runtime):
    room = unique()
    topic = in_topic(room)
    await apublish(mosquitto, topic, "a retained reading", retain=True)
    recorder = Recorder()
    server = await served(recorder, mosquitto, topics=[topic], publish_group=None)
    try:
        scope, _ = await asyncio.wait_for(recorder.seen.get(), 10)  # replayed on subscribe
    finally:
        await server.stop()
        await apublish(mosquitto, topic, b"", retain=True)  # clear it from the broker
    assert scope["retain"] is True
    routed = {**scope, "route": {"kwargs": {"room": room}}}
    communicator = ApplicationCommunicator(WithRuntime(RoomMqttConsumer.as_asgi(), runtime), routed)
    await communicator.send_input({"type": "mqtt.publish", "payload": b"a retained reading"})
    answer = await communicator.receive_output(5)
    assert answer["type"] == "mqtt.reject" and "retained" in answer["reason"]


async def test_anything_can_publish_through_the_group(mosquitto):
    topic = f"{unique('out')}/x"
    group = unique("mqtt-publish")
    listener = MqttListener(mosquitto, topic)
    server = await served(Recorder(), mosquitto, topics=[], publish_group=group)
    try:
        layer = get_channel_layer()
        await layer.group_send(group, {"type": "mqtt.publish", "payload": b"no topic"})  # refused, relay goes on
        await layer.group_send(group, {"type": "mqtt.publish", "topic": topic, "payload": b"hi", "qos": 1})
        many = [
            {"topic": topic, "payload": b"one", "qos": 1},
            {"payload": b"no topic"},
            {"topic": topic, "payload": "two"},
        ]
        await layer.group_send(group, {"type": "mqtt.publish.many", "messages": many})
        messages = await asyncio.to_thread(listener.wait, 3)
    finally:
        await server.stop()
        listener.close()
    assert [message.payload for message in messages] == [b"hi", b"one", b"two"]


async def test_a_failing_application_is_run_again_until_the_message_is_safe(mosquitto):
    base = unique("retry")
    attempts: list[bytes] = []

    async def flaky(scope, receive, send):  # the database is down for the first two tries
        payload = (await receive())["payload"]
        attempts.append(payload)
        if payload == b"first" and attempts.count(b"first") < 3:
            raise RuntimeError("database unavailable")
        await send({"type": "mqtt.ack"})

    server = await served(flaky, mosquitto, topics=[f"{base}/#"], publish_group=None, min_backoff=0.05)
    try:
        await apublish(mosquitto, f"{base}/a", b"first")
        await apublish(mosquitto, f"{base}/a", b"second")
        async with asyncio.timeout(10):
            while b"second" not in attempts:
                await asyncio.sleep(0.02)  # polling a list with a deadline
    finally:
        await server.stop()
    # Started in order; the first was tried again until safe (the second may have been served meanwhile).
    assert attempts[0] == b"first" and sorted(attempts) == [b"first", b"first", b"first", b"second"]


async def test_stop_before_start_is_harmless(mosquitto):
    await MqttServer(Recorder(), mosquitto, topics=["x/#"], publish_group=None).stop()


async def test_a_second_receive_waits_until_the_application_timeout(mosquitto):
    base = unique("timeout")
    attempts: list[str] = []

    async def greedy(scope, receive, send):  # asks for a second event on its first try
        await receive()
        attempts.append("received")
        if len(attempts) == 1:
            await receive()  # never returns: the instance is cancelled at the timeout
            attempts.append("second receive returned")
        await send({"type": "mqtt.ack"})
        attempts.append("acked")

    server = await served(
        greedy, mosquitto, topics=[f"{base}/#"], publish_group=None, application_timeout=0.2, min_backoff=0.05
    )
    try:
        await apublish(mosquitto, f"{base}/a", b"x")
        async with asyncio.timeout(10):
            while "acked" not in attempts:
                await asyncio.sleep(0.02)  # polling a list with a deadline
    finally:
        await server.stop()
    assert attempts == ["received", "received", "acked"]


class Answering(AsyncMqttConsumer):
    async def receive(self, payload: bytes) -> None:
        if payload == b"fail":
            raise RuntimeError("database unavailable")
        await self.ack()


async def test_a_consumer_reaches_the_database_thread_only_after_a_failure(monkeypatch):
    closes: list[bool] = []

    async def counted() -> None:
        closes.append(True)

    monkeypatch.setattr("protocols.consumer.aclose_old_connections", counted)
    communicator = ApplicationCommunicator(Answering.as_asgi(), {"type": "mqtt", "topic": "a"})
    await communicator.send_input({"type": "mqtt.publish", "payload": b"fine"})
    assert await communicator.receive_output(5) == {"type": "mqtt.ack"}
    await communicator.wait(5)  # returned after its one message
    assert closes == []

    communicator = ApplicationCommunicator(Answering.as_asgi(), {"type": "mqtt", "topic": "a"})
    await communicator.send_input({"type": "mqtt.publish", "payload": b"fail"})
    with pytest.raises(RuntimeError):
        await communicator.wait(5)
    assert closes == [True]  # stale connections closed before the adapter's retry


async def test_an_adapter_publishes_what_its_own_process_stores_without_the_group(mosquitto, monkeypatch, runtime):
    from gateway import publishing

    room = unique()
    listener = MqttListener(mosquitto, out_topic(room))
    server = await served(Recorder(), mosquitto, topics=[], publish_group=PUBLISH_GROUP)
    layer = get_channel_layer()
    sent_to = record_group_sends(monkeypatch, layer)
    rooms = runtime.rooms
    unsubscribe = rooms.stored.subscribe(publishing.publish_through(server), first=True)
    try:
        await rooms._fan_out(room, [{"type": "message", "id": 1, "room": room, "message": "here"}])
        messages = await asyncio.to_thread(listener.wait, 1)
        assert sent_to == [room_group(room)]  # the readers' group only: no layer trip, no claim
        server._stopping = True  # stopping (or disconnected): the group's adapters take it
        await rooms._fan_out(room, [{"type": "message", "id": 2, "room": room, "message": "there"}])
        assert sent_to[1:] == [room_group(room), PUBLISH_GROUP]
        unsubscribe()  # no adapter of its own: the group's
        server._stopping = False
        await rooms._fan_out(room, [{"type": "message", "id": 3, "room": room, "message": "elsewhere"}])
        assert sent_to[3:] == [room_group(room), PUBLISH_GROUP]
    finally:
        unsubscribe()
        server._stopping = False
        await server.stop()
        listener.close()
    assert [json.loads(message.payload)["message"] for message in messages] == ["here"]


async def test_an_instance_past_its_timeout_is_cancelled_and_the_message_served_again(mosquitto, caplog):
    base = unique("slow")
    tries: list[str] = []

    async def slow_then_fine(scope, receive, send):
        await receive()
        if not tries:
            tries.append("slow")
            try:
                await asyncio.Event().wait()  # stuck: the watchdog cancels it at the timeout
            except asyncio.CancelledError:
                tries.append("cancelled")
                raise
        tries.append("acked")
        await send({"type": "mqtt.ack"})

    async def stubborn(scope, receive, send):  # swallows the cancellation, answers anyway
        await receive()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            tries.append(f"stubborn, still cancelling: {asyncio.current_task().cancelling()}")
        await send({"type": "mqtt.ack"})
        tries.append("stubborn acked")

    for application, topic, done in ((slow_then_fine, f"{base}/a", "acked"), (stubborn, f"{base}/b", "stubborn acked")):
        server = await served(
            application, mosquitto, topics=[topic], publish_group=None, application_timeout=0.2, min_backoff=0.05
        )
        try:
            await apublish(mosquitto, topic, b"x")
            async with asyncio.timeout(10):
                while done not in tries:
                    await asyncio.sleep(0.02)  # polling a list with a deadline
        finally:
            await server.stop()
        assert not server._deadlines and not server._expired
    assert tries == ["slow", "cancelled", "acked", "stubborn, still cancelling: 1", "stubborn acked"]
    assert f"MQTT application failed on {base}/a: no answer within 0.2s" in caplog.text


async def a_task_that_lost_its_cancellation() -> tuple[asyncio.Task, asyncio.Event]:
    """A task cancelled while ``asyncio.wait_for`` (as redis-py sends every command, its socket timeout
    set) has what it waited for but has not yet seen it: under Python 3.11, ``wait_for`` returns the
    result and the cancellation is lost (CPython gh-86296). The task goes on to wait for ever, as a
    channel-layer receive loop would; the event tells it went on."""
    loop = asyncio.get_running_loop()
    waiting, went_on = asyncio.Event(), asyncio.Event()
    sent = loop.create_future()

    async def sends_then_receives() -> None:
        waiting.set()
        await asyncio.wait_for(sent, 10)
        went_on.set()
        await asyncio.Event().wait()

    task = loop.create_task(sends_then_receives())
    await waiting.wait()
    sent.set_result(None)  # done: wait_for hears of it on the loop's next turn...
    task.cancel()  # ...and this lands before
    await asyncio.wait_for(went_on.wait(), 5)
    return task, went_on


async def test_cancel_and_wait_ends_a_task_that_lost_its_cancellation():
    task, went_on = await a_task_that_lost_its_cancellation()
    try:
        assert went_on.is_set() and not task.done()  # one cancellation, lost
        assert await cancel_and_wait([task], 5) == set()
        assert task.cancelled()
    finally:
        task.cancel()


async def test_cancel_and_wait_gives_up_on_a_task_that_will_not_end():
    started, listening = asyncio.Event(), [True]

    async def deaf() -> None:
        started.set()
        while listening:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(deaf())
    await started.wait()
    try:
        assert await cancel_and_wait([task], 0.3, again_after=0.1) == {task}
        assert task.cancelling() >= 3  # cancelled again and again meanwhile
    finally:
        listening.clear()
        task.cancel()
        await asyncio.wait([task])


async def test_stop_ends_the_relay_even_when_its_cancellation_was_lost(mosquitto):
    """SIGTERM (stop()) landing as the relay's claim is answered: the relay's one cancellation is lost
    in ``wait_for`` (as in redis-py's send of the claim's SET), and it went on; it used to go back to
    the channel layer for the next event, for ever. Now it stops there, and stop() waits for it: no
    task of the adapter outlives stop()."""
    loop = asyncio.get_running_loop()
    group = unique("mqtt-publish")
    claiming, claimed = asyncio.Event(), asyncio.Event()
    answer = loop.create_future()

    async def claim(event: dict) -> bool:
        claiming.set()
        won = await asyncio.wait_for(answer, 10)
        claimed.set()  # only once the relay's cancellation was lost
        return won

    server = await served(Recorder(), mosquitto, topics=[], publish_group=group, claim=claim)
    relay = server._relay
    assert relay is not None
    try:
        await get_channel_layer().group_send(group, {"type": "mqtt.publish", "topic": f"{group}/x", "payload": b"x"})
        await asyncio.wait_for(claiming.wait(), 10)
        answer.set_result(True)
        await server.stop()  # cancels the relay before wait_for sees the answer
        assert claimed.is_set()  # the relay went on after its cancellation
        assert relay.done() and server._refresher is not None and server._refresher.done()
    finally:
        if not relay.done():
            relay.cancel()
            await server.stop()
