"""The adapter commands settle their heap once started: start-up's objects are no longer scanned by the
garbage collector, and young objects are collected less often."""

from __future__ import annotations

import gc

from gateway.adapters import GC_THRESHOLD, settle_heap


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


def test_the_mqtt_window_comes_from_the_settings(settings):
    from consumers.routing import mqtt_router
    from gateway.adapters import Adapters

    settings.MQTT_MAX_IN_FLIGHT = 7
    adapter = Adapters(mqtt_router, smtp=False).mqtt
    assert adapter.max_in_flight == 7
