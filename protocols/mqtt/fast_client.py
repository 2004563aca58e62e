"""OPT-IN, version-checked: a paho-mqtt client that reads and writes its socket in large pieces.

paho reads a packet with three ``recv`` calls (type, length, rest) and only one packet (or as
many as it has messages in flight) per readable event, and writes each packet with a ``send``
of its own. ``BufferedClient`` reads what the socket has in one ``recv`` and handles every packet
in it in that event, and writes everything paho queued in one ``send``.

It does so by overriding seven PRIVATE methods of paho-mqtt 2.2.0 (``_sock_recv``, ``_packet_read``,
``_handle_publish``, ``_handle_pubackcomp``, ``_sock_send``, ``_packet_write``, ``_sock_close``) and
reading its private state, so it is never the default: ``client_from_url(..., fast=True)``
(``MqttServer(fast_client=True)``, the gateway's ``MQTT_FAST_CLIENT``) asks for it, and
``buffered_client_class()`` refuses any paho other than ``PAHO_VERSION``. docs/paho-upstream.md has
what it buys and the public hooks paho would need instead.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt import __version__ as paho_version
from paho.mqtt.exception import MalformedPacket

PAHO_VERSION = "2.2.0"  # the only paho whose private methods BufferedClient was written against


class UnsupportedPaho(RuntimeError):
    """The installed paho-mqtt is not the one ``BufferedClient`` overrides: turn MQTT_FAST_CLIENT off."""


def buffered_client_class(installed: str = paho_version) -> type[paho.Client]:
    """``BufferedClient``, if ``installed`` is the paho it was written for; else ``UnsupportedPaho``."""
    if installed != PAHO_VERSION:
        raise UnsupportedPaho(
            f"protocols.mqtt.fast_client overrides private methods of paho-mqtt {PAHO_VERSION}, "
            f"found {installed}: use the plain client (MQTT_FAST_CLIENT=false, fast_client=False) "
            "or check BufferedClient against this paho and update PAHO_VERSION"
        )
    return BufferedClient


READ_SIZE = 65536  # bytes asked of the socket at once


class InboundMessage(paho.MQTTMessage):
    """An ``MQTTMessage`` as it arrived, without the publish-tracking ``info`` (a lock and a
    condition) that paho makes for every message and only uses for its own publications."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes, qos: int, dup: bool, retain: bool, payload: bytes) -> None:
        self.timestamp = paho.time_func()
        self.state = paho.mqtt_ms_invalid
        self.mid, self._topic, self.qos, self.dup, self.retain, self.payload = mid, topic, qos, dup, retain, payload
        self.info = None  # type: ignore[assignment]  # paho's own stub: no info until it is published
        self.properties = None


class BufferedClient(paho.Client):
    """A paho client that reads and writes its socket in large pieces (paho 2.2's socket methods).

    Reads: one ``recv`` fills a buffer, each whole packet in it is taken in one piece (otherwise
    paho's small reads are served from the buffer), and ``loop_read`` goes on until the buffer is
    used up (the event loop would not call it again for bytes that have left the socket). A two-byte
    PUBACK for one of its publications is handled without the reason code and properties objects
    paho makes for it. Writes: paho's packets go into a buffer and leave in one ``send`` at the end
    of ``loop_write``; what the socket does not take waits for the next writable event.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_at = 0
        self._write_buffer = bytearray()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_at >= len(self._read_buffer):
            data = super()._sock_recv(READ_SIZE)  # BlockingIOError when there is nothing: paho waits
            if len(data) <= bufsize:
                return data  # b"" is the end of the connection
            self._read_buffer, self._read_at = data, 0
        start = self._read_at
        self._read_at = start + bufsize
        return self._read_buffer[start : self._read_at]

    def _packet_read(self) -> paho.MQTTErrorCode:
        """A whole packet waiting in the buffer is taken in one piece; anything else (a packet that
        began in an earlier read, one not all here yet, an empty buffer) goes paho's way."""
        if self._in_packet["command"] != 0:
            return super()._packet_read()
        buffer, at = self._read_buffer, self._read_at
        end = len(buffer)
        length, multiplier, position = 0, 1, at + 1
        while True:  # the remaining length: 1 to 4 bytes, 7 bits each
            if position >= end or position - at > 4:
                return super()._packet_read()
            byte = buffer[position]
            position += 1
            length += (byte & 127) * multiplier
            if not byte & 128:
                break
            multiplier *= 128
        if position + length > end:
            return super()._packet_read()
        self._read_at = position + length
        self._in_packet = {
            "command": buffer[at],
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": length,
            "packet": buffer[position : position + length],  # type: ignore[typeddict-item]  # paho slices it
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        with self._msgtime_mutex:
            self._last_bytes_received = paho.time_func()
        return rc

    def _handle_publish(self) -> paho.MQTTErrorCode:
        """A PUBLISH at QoS 0 or 1, read straight from the packet into an ``InboundMessage``: MQTT 3.1.1,
        and MQTT 5 without properties (``properties`` None rather than an empty ``Properties``, which paho
        makes for every message at a fifth of the adapter's CPU). QoS 2, an MQTT 5 PUBLISH with
        properties and anything malformed go paho's way."""
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        topic_end = 2 + (packet[0] << 8 | packet[1]) if len(packet) >= 2 else 0
        payload_at = topic_end + (2 if qos else 0)
        if self._protocol == paho.MQTTv5:  # then the properties' length: 0, one byte, when there are none
            if len(packet) <= payload_at or packet[payload_at] != 0:
                return super()._handle_publish()
            payload_at += 1
        if qos == 2 or topic_end <= 2 or len(packet) < payload_at:
            return super()._handle_publish()
        mid = packet[topic_end] << 8 | packet[topic_end + 1] if qos else 0
        payload = packet[payload_at:]
        message = InboundMessage(
            mid,
            bytes(packet[2:topic_end]),
            qos,
            bool(header & 0x08),
            bool(header & 0x01),
            payload if isinstance(payload, bytes) else bytes(payload),
        )
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> paho.MQTTErrorCode:
        """A PUBACK or PUBCOMP of two bytes is a packet id and nothing else (under MQTT 5: success, no
        properties): without an ``on_publish`` callback there is no reason code or properties to make
        (paho makes both, for every one)."""
        packet = self._in_packet["packet"]
        if len(packet) != 2 or self.on_publish is not None:
            return super()._handle_pubackcomp(cmd)
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, None, None)  # type: ignore[arg-type]  # only on_publish would look at the last two
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == paho.MQTTErrorCode.MQTT_ERR_SUCCESS and self._read_at < len(self._read_buffer):
            rc = super().loop_read(max_packets)
        return rc

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        self._write_buffer += buf
        return len(buf)

    def _packet_write(self) -> paho.MQTTErrorCode:
        rc = super()._packet_write()  # every queued packet into the buffer
        if rc == paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = self._flush()
        return rc

    def _flush(self) -> paho.MQTTErrorCode:
        while self._write_buffer and self._sock is not None:
            try:
                sent = super()._sock_send(self._write_buffer)
            except BlockingIOError:
                return paho.MQTTErrorCode.MQTT_ERR_AGAIN  # the rest goes at the next writable event
            except OSError:
                return paho.MQTTErrorCode.MQTT_ERR_CONN_LOST
            del self._write_buffer[:sent]
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def want_write(self) -> bool:
        return bool(self._write_buffer) or super().want_write()

    def _sock_close(self) -> None:
        if self._sock is not None and self._write_buffer:
            # What paho wrote before closing (a DISCONNECT) still leaves, if the socket takes it now.
            with contextlib.suppress(Exception):  # closing anyway
                self._flush()
        self._read_buffer, self._read_at = b"", 0
        self._write_buffer.clear()
        super()._sock_close()
