"""The opt-in ``BufferedClient`` reads and writes its socket in large pieces and loses nothing doing so;
it is written for one paho, refuses any other, and is never what the adapter uses unless asked."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import paho.mqtt.client as paho
import pytest
from paho.mqtt import __version__ as paho_version
from paho.mqtt.enums import CallbackAPIVersion

from protocols.mqtt.client import AsyncioDriver, client_from_url
from protocols.mqtt.fast_client import PAHO_VERSION, BufferedClient, UnsupportedPaho, buffered_client_class
from protocols.mqtt.server import publish_properties
from tests.support import unique


def test_the_installed_paho_is_the_one_buffered_client_overrides():
    """Fails on an upgrade of paho-mqtt: check BufferedClient's overrides against it, then PAHO_VERSION."""
    assert paho_version == PAHO_VERSION
    assert buffered_client_class() is BufferedClient


@pytest.mark.parametrize("other", ["2.2.1", "2.3.0", "2.1.0", "3.0.0"])
def test_buffered_client_refuses_any_other_paho(other):
    with pytest.raises(UnsupportedPaho, match=f"found {other}"):
        buffered_client_class(other)


def test_the_adapter_client_is_plain_paho_unless_asked():
    plain, _, _ = client_from_url("mqtt://127.0.0.1:1883", "t")
    fast, _, _ = client_from_url("mqtt://127.0.0.1:1883", "t", fast=True)
    assert type(plain) is paho.Client
    assert type(fast) is BufferedClient


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


def connected_client(protocol: int = paho.MQTTv311) -> tuple[BufferedClient, socket.socket, list]:
    ours, broker = socket.socketpair()
    sock = Recording(fileno=ours.detach())
    sock.setblocking(False)
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True, protocol=protocol)
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
    assert received[-1].payload == b"m200"
    assert received[-1].mid == 200
    assert len(received) == 200
    broker.close()
    assert client.loop_read() != paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # the end of the connection is seen


def test_queued_packets_leave_in_one_send():
    client, broker, _ = connected_client()
    Recording.sends = 0
    for mid in (1, 2, 3):
        client.ack(mid, 1)
    assert client.want_write()
    client.loop_write()
    assert Recording.sends == 1
    assert not client.want_write()
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
    assert first.is_published()
    assert not second.is_published()
    assert list(client._out_messages) == [second.mid]
    heard = []
    client.on_publish = lambda c, userdata, mid, reason_code, properties: heard.append((mid, reason_code.is_failure))
    broker.sendall(bytes([0x40, 2]) + second.mid.to_bytes(2, "big") + bytes([0x40, 2, 0xFF, 0xFF]))  # and a stray one
    client.loop_read()
    assert second.is_published()
    assert not client._out_messages
    assert heard == [(second.mid, False)]


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
    assert received == []
    assert broker.recv(4) == bytes([0x50, 2, 0, 9])  # PUBREC; delivered on PUBREL
    broker.sendall(bytes([0x62, 2, 0, 9]))  # PUBREL
    client.loop_read()
    assert [m.payload for m in received] == [b"exactly once"]


def mqtt5_publish_packet(mid: int, payload: bytes, properties: bytes = b"", topic: bytes = b"rooms/lobby/in") -> bytes:
    """An MQTT 5 QoS 1 PUBLISH as a broker sends it: the properties' length (one byte here), then them."""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + bytes([len(properties)]) + properties
    body += payload
    return bytes([0x32, len(body)]) + body


def test_an_mqtt5_publish_without_properties_is_read_in_one_piece_and_one_with_them_paho_s_way():
    client, broker, received = connected_client(paho.MQTTv5)
    user_property = bytes([38]) + (2).to_bytes(2, "big") + b"id" + (3).to_bytes(2, "big") + b"r-1"
    broker.sendall(
        mqtt5_publish_packet(1, b"first")  # read paho's way (an empty buffer), handled without Properties
        + mqtt5_publish_packet(2, b"plain")
        + mqtt5_publish_packet(3, b"keyed", user_property)
        + mqtt5_publish_packet(4, b"")
    )
    client.loop_read()
    assert [(m.topic, m.mid, m.qos, m.payload) for m in received] == [
        ("rooms/lobby/in", 1, 1, b"first"),
        ("rooms/lobby/in", 2, 1, b"plain"),
        ("rooms/lobby/in", 3, 1, b"keyed"),
        ("rooms/lobby/in", 4, 1, b""),
    ]
    assert [type(m).__name__ for m in received] == ["InboundMessage", "InboundMessage", "MQTTMessage", "InboundMessage"]
    assert received[0].properties is None and received[1].properties is None
    assert received[2].properties.UserProperty == [("id", "r-1")]
    assert [publish_properties(m.properties) for m in received] == [{}, {}, {"UserProperty": [("id", "r-1")]}, {}]


def test_an_mqtt5_puback_with_a_reason_code_is_left_to_paho():
    client, broker, _ = connected_client(paho.MQTTv5)
    heard = []
    first = client.publish("out", b"one", qos=1)
    second = client.publish("out", b"two", qos=1)
    client.loop_write()
    broker.sendall(bytes([0x40, 2]) + first.mid.to_bytes(2, "big"))  # success, said in two bytes
    client.loop_read()
    assert first.is_published() and not second.is_published()
    client.on_publish = lambda c, userdata, mid, reason_code, properties: heard.append((mid, reason_code.value))
    broker.sendall(bytes([0x40, 4]) + second.mid.to_bytes(2, "big") + bytes([0x10, 0]))  # 16: no subscribers
    client.loop_read()
    assert second.is_published()
    assert heard == [(second.mid, 16)]


@pytest.mark.parametrize("fast", [False, True])
async def test_the_adapter_sends_each_packet_at_once(mosquitto, fast):
    """TCP_NODELAY on the adapter's connection: with Nagle's algorithm a PUBACK or a publication waits
    while an earlier packet is unacknowledged, for the broker's delayed ACK (docs/mqtt.md, "Latency")."""
    loop = asyncio.get_running_loop()
    client, host, port = client_from_url(mosquitto, unique("nodelay-"), fast=fast)
    connected = loop.create_future()
    client.on_connect = lambda *args: loop.call_soon_threadsafe(connected.set_result, True)
    driver = AsyncioDriver(client, loop)
    try:
        await driver.connect(host, port, 30)
        await asyncio.wait_for(connected, 10)
        assert client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.disconnect()
        driver.close()
