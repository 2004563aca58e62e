"""The adapter commands (and the gateway's daphne) settle their heap once started: start-up's objects are
no longer scanned by the garbage collector, and young objects are collected less often."""

from __future__ import annotations

import asyncio
import gc

# config.asgi imported at collection (as test_application does): the test run itself refuses dev settings
from config.asgi import build_application
from gateway.heap import GC_THRESHOLD, QuietCollector, settle_heap
from gateway.topics import PUBLISH_GROUP, out_topic, room_group


def test_settle_heap_freezes_what_start_up_made():
    threshold = gc.get_threshold()
    made_at_start_up = ["a container the collector tracks"]
    try:
        settle_heap()
        assert gc.get_threshold() == GC_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert not any(found is made_at_start_up for found in gc.get_objects(generation=2))  # frozen: not scanned
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert any(found is made_at_start_up for found in gc.get_objects(generation=2))


async def test_the_quiet_collector_collects_once_a_burst_is_over_not_during_it():
    """The ASGI process's full collections (gateway/heap.py): none while middle-generation collections
    keep coming (a storm's connections), one at the first look that finds none came since the last."""
    collector = QuietCollector(asyncio.get_running_loop(), every=3600, after=3)  # looks made by hand here
    gc.collect()  # no middle-generation collections since a full one
    collector.seen = gc.get_count()[2]
    for _ in range(3):
        gc.collect(1)  # what a burst of new objects brings on
    collector.check()
    assert collector.collections == 0  # as many as the default waits for, but they are still coming
    gc.collect(1)
    collector.check()
    assert collector.collections == 0 and gc.get_count()[2] == 4
    collector.check()  # none since the last look: the burst is over
    assert collector.collections == 1 and gc.get_count()[2] == 0
    collector.check()
    assert collector.collections == 1  # nothing to wait for now
    assert collector.handle is not None  # it looks again in ``every`` seconds
    collector.stop()
    assert collector.handle.cancelled()


def test_the_mqtt_window_comes_from_the_settings(settings):
    from consumers.routing import mqtt_router
    from gateway.adapters import Adapters
    from gateway.runtime import Runtime

    settings.MQTT_MAX_IN_FLIGHT = 7
    adapter = Adapters(mqtt_router, Runtime(), smtp=False).mqtt
    assert adapter.max_in_flight == 7


async def test_a_running_adapter_publishes_what_its_process_stores_and_once_stopped_leaves_it_to_the_group(
    settings, mosquitto, monkeypatch, runtime
):
    import asyncio
    import json

    from channels.layers import get_channel_layer

    from gateway.adapters import Adapters
    from tests.support import MqttListener, record_group_sends, unique

    settings.MQTT_URL = mosquitto
    settings.MQTT_CLIENT_ID = unique("test-adapters")
    layer = get_channel_layer()
    sent_to = record_group_sends(monkeypatch, layer)
    room = unique()
    listener = MqttListener(mosquitto, out_topic(room))
    adapters = Adapters(build_application(runtime), runtime, smtp=False)
    try:
        await adapters.start()
        await adapters.mqtt.wait_ready(10)
        await runtime.rooms._fan_out(room, [{"type": "message", "id": 1, "room": room, "message": "while running"}])
        messages = await asyncio.to_thread(listener.wait, 1)
        assert sent_to == [room_group(room)]  # its own adapter published it: no trip to the group
    finally:
        await adapters.stop()
        listener.close()
    assert [json.loads(message.payload)["message"] for message in messages] == ["while running"]
    await runtime.rooms._fan_out(room, [{"type": "message", "id": 2, "room": room, "message": "once stopped"}])
    assert sent_to[1:] == [room_group(room), PUBLISH_GROUP]  # unsubscribed on stop
