"""The adapter's paho client reads and writes its socket in large pieces, and loses nothing doing so."""

from __future__ import annotations

import contextlib
import socket

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocols.mqtt.client import BufferedClient


def publish_packet(mid: int, payload: bytes, topic: bytes = b"a/b") -> bytes:
    """A QoS 1 PUBLISH as a broker sends it."""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + payload
    return bytes([0x32, len(body)]) + body


class Recording(socket.socket):
    """One end of a socket pair that counts its send calls."""

    sends = 0

    def send(self, data, *args):
        type(self).sends += 1
        return super().send(data, *args)


def connected_client() -> tuple[BufferedClient, socket.socket, list]:
    ours, broker = socket.socketpair()
    sock = Recording(fileno=ours.detach())
    sock.setblocking(False)
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True)
    client._sock = sock  # as paho's connect leaves it
    client.on_socket_register_write = client.on_socket_unregister_write = lambda *args: None  # an event loop's
    received: list[paho.MQTTMessage] = []
    client.on_message = lambda c, u, message: received.append(message)
    return client, broker, received


def test_every_packet_a_read_brings_is_handled_in_that_read():
    client, broker, received = connected_client()
    packets = b"".join(publish_packet(mid, f"m{mid}".encode()) for mid in range(1, 201))
    broker.sendall(packets[:-3])  # the last packet arrives in two pieces
    client.loop_read()
    assert [m.payload for m in received] == [f"m{mid}".encode() for mid in range(1, 200)]
    broker.sendall(packets[-3:])
    client.loop_read()
    assert received[-1].payload == b"m200" and received[-1].mid == 200 and len(received) == 200
    broker.close()
    assert client.loop_read() != paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # the end of the connection is seen


def test_queued_packets_leave_in_one_send():
    client, broker, _ = connected_client()
    Recording.sends = 0
    for mid in (1, 2, 3):
        client.ack(mid, 1)
    assert client.want_write()
    client.loop_write()
    assert Recording.sends == 1 and not client.want_write()
    assert broker.recv(100) == b"".join(bytes([0x40, 2, 0, mid]) for mid in (1, 2, 3))  # three PUBACKs


def test_what_the_socket_does_not_take_waits_for_the_next_writable_event():
    client, broker, _ = connected_client()
    client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    broker.setblocking(False)
    payload = b"x" * 200_000
    client.publish("big", payload, qos=0)
    client.loop_write()
    assert client.want_write()  # the rest is still in the buffer
    received = bytearray()
    while client.want_write() or len(received) < len(payload):
        client.loop_write()
        with contextlib.suppress(BlockingIOError):
            received += broker.recv(65536)
    assert received.endswith(payload)


def test_a_puback_releases_its_publication_with_or_without_a_callback():
    client, broker, _ = connected_client()
    first = client.publish("out", b"one", qos=1)
    second = client.publish("out", b"two", qos=1)
    client.loop_write()
    broker.sendall(bytes([0x40, 2]) + first.mid.to_bytes(2, "big"))
    client.loop_read()
    assert first.is_published() and not second.is_published() and list(client._out_messages) == [second.mid]
    heard = []
    client.on_publish = lambda c, userdata, mid, reason_code, properties: heard.append((mid, reason_code.is_failure))
    broker.sendall(bytes([0x40, 2]) + second.mid.to_bytes(2, "big") + bytes([0x40, 2, 0xFF, 0xFF]))  # and a stray one
    client.loop_read()
    assert second.is_published() and not client._out_messages and heard == [(second.mid, False)]


def test_a_malformed_packet_ends_the_connection():
    client, broker, received = connected_client()
    broker.sendall(publish_packet(1, b"fine") + publish_packet(2, b"no topic", topic=b""))
    assert client.loop_read() != paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [m.payload for m in received] == [b"fine"]


def test_publishes_arrive_with_their_flags_and_bytes_whichever_way_they_are_read():
    client, broker, received = connected_client()
    topic = b"rooms/lobby/in"
    qos0 = bytes([0x30, 2 + len(topic) + 2]) + len(topic).to_bytes(2, "big") + topic + b"q0"
    retained_dup = bytearray(publish_packet(7, b"again", topic=topic))
    retained_dup[0] |= 0x08 | 0x01  # DUP and RETAIN
    broker.sendall(publish_packet(6, b"first", topic=topic) + qos0 + bytes(retained_dup))
    client.loop_read()  # the first is read paho's way (an empty buffer), the others in one piece
    assert [(m.topic, m.mid, m.qos, m.dup, m.retain, m.payload) for m in received] == [
        ("rooms/lobby/in", 6, 1, False, False, b"first"),
        ("rooms/lobby/in", 0, 0, False, False, b"q0"),
        ("rooms/lobby/in", 7, 1, True, True, b"again"),
    ]
    assert all(type(m.payload) is bytes for m in received)


def test_a_qos_2_publish_is_left_to_paho():
    client, broker, received = connected_client()
    packet = bytearray(publish_packet(9, b"exactly once"))
    packet[0] = 0x34  # QoS 2
    broker.sendall(bytes(packet))
    client.loop_read()
    client.loop_write()
    assert received == [] and broker.recv(4) == bytes([0x50, 2, 0, 9])  # PUBREC; delivered on PUBREL
    broker.sendall(bytes([0x62, 2, 0, 9]))  # PUBREL
    client.loop_read()
    assert [m.payload for m in received] == [b"exactly once"]
