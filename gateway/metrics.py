"""Prometheus metrics of this process, served at ``/metrics``: of all the group's processes together under
``python -m gateway.serve --processes N`` (prometheus_client's multiprocess mode; gateway/process_group.py),
where each gauge's ``multiprocess_mode`` says how the processes' values add up. A group's parent adds
``gateway_group_processes`` there (``gateway.process_group.group_gauge``): it loads none of these."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

messages_in = Counter("gateway_messages_in_total", "Messages stored, by the way they came in", ["source"])
deliveries = Counter("gateway_deliveries_total", "Messages sent to live readers", ["protocol"])
rejects = Counter("gateway_rejects_total", "Input refused with an answer", ["protocol"])
slow_readers = Counter(
    "gateway_slow_readers_closed_total", "Readers closed for falling READER_MAX_BACKLOG bytes behind", ["protocol"]
)
connections = Gauge(
    "gateway_connections", "Live readers connected to this process", ["protocol"], multiprocess_mode="livesum"
)
fanout_seconds = Histogram(
    "gateway_fanout_seconds",
    "From a message being stored to a live reader being sent it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
live_coalesced = Counter("gateway_live_coalesced_total", "Messages delivered live late, coalesced: over a rate")
layer_errors = Counter("gateway_layer_errors_total", "Channel-layer sends that failed")
adapter_reconnects = Gauge(
    "gateway_mqtt_reconnects", "Times this process's MQTT adapter reconnected", multiprocess_mode="livesum"
)
loop_lag = Gauge(
    "gateway_event_loop_lag_seconds",
    "How late the event loop ran a timer, at worst, in the last 10 s",
    multiprocess_mode="livemax",
)
mqtt_parked = Counter("gateway_mqtt_parked_total", "MQTT messages set aside as dead letters after failing")
mqtt_retries = Gauge(
    "gateway_mqtt_retries", "MQTT messages served again because the services were down", multiprocess_mode="livesum"
)
mqtt_failures = Gauge(
    "gateway_mqtt_application_failures",
    "MQTT application instances that raised or timed out",
    multiprocess_mode="livesum",
)
mqtt_oldest_unacked = Gauge(
    "gateway_mqtt_oldest_unacked_seconds",
    "Age of the oldest MQTT message this process has not acknowledged",
    multiprocess_mode="livemax",
)
mail_refusals = Counter("gateway_mail_refusals_total", "Mails refused for what they are (554), by why", ["reason"])
