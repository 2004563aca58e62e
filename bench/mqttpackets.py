"""The few MQTT 3.1.1 packets a bench subscriber needs: CONNECT, SUBSCRIBE (QoS 0), and reading PUBLISH.

For the subscribers of the Mosquitto-WebSocket peer (``bench/mosquitto_ws.py``): MQTT over a WebSocket
(subprotocol ``mqtt``) is the same byte stream in binary frames, a packet possibly split over frames or
several in one, so ``MqttStream`` reassembles packets from whatever the frames carry.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

CONNACK, PUBLISH, SUBACK, PINGRESP = 2, 3, 9, 13


def _length(value: int) -> bytes:
    """MQTT's variable-length "remaining length"."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect(client_id: str, keepalive: int = 600) -> bytes:
    """CONNECT, MQTT 3.1.1, a clean session, no credentials."""
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + _string(client_id)
    return bytes([0x10]) + _length(len(body)) + body


def subscribe(topic: str, packet_id: int = 1) -> bytes:
    """SUBSCRIBE to one topic filter at QoS 0."""
    body = struct.pack("!H", packet_id) + _string(topic) + bytes([0])
    return bytes([0x82]) + _length(len(body)) + body


class MqttStream:
    """Packets out of a byte stream: ``on_packet(kind, flags, body)`` for each complete one;
    ``publish_payload(flags, body)`` takes a PUBLISH apart."""

    def __init__(self, on_packet: Callable[[int, int, bytes], None]) -> None:
        self.on_packet = on_packet
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        position = 0
        while (header := _fixed_header(buffer, position)) is not None:
            first, start, length = header
            if start + length > len(buffer):
                break
            self.on_packet(first >> 4, first & 0x0F, bytes(buffer[start : start + length]))
            position = start + length
        if position:
            del buffer[:position]


def _fixed_header(buffer: bytearray, position: int) -> tuple[int, int, int] | None:
    """(first byte, where the body starts, its length) of the packet at ``position``; None while incomplete."""
    length, shift = 0, 0
    for index in range(position + 1, min(position + 5, len(buffer))):
        digit = buffer[index]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return buffer[position], index + 1, length
    return None


def publish_payload(flags: int, body: bytes) -> bytes:
    """A PUBLISH's payload (after the topic, and the packet id when QoS > 0)."""
    (topic_length,) = struct.unpack_from("!H", body)
    start = 2 + topic_length + (2 if flags & 0x06 else 0)
    return body[start:]
