"""Prometheus metrics of this process, served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

messages_in = Counter("gateway_messages_in_total", "Messages stored, by the way they came in", ["source"])
deliveries = Counter("gateway_deliveries_total", "Messages sent to live readers", ["protocol"])
rejects = Counter("gateway_rejects_total", "Input refused with an answer", ["protocol"])
connections = Gauge("gateway_connections", "Live readers connected to this process", ["protocol"])
fanout_seconds = Histogram(
    "gateway_fanout_seconds",
    "From a message being stored to a live reader being sent it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
layer_errors = Counter("gateway_layer_errors_total", "Channel-layer sends that failed")
adapter_reconnects = Gauge("gateway_mqtt_reconnects", "Times this process's MQTT adapter reconnected")
mail_refusals = Counter("gateway_mail_refusals_total", "Mails refused for what they are (554), by why", ["reason"])
