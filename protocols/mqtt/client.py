"""Drive a paho-mqtt client from an asyncio event loop (paho's external-loop socket callbacks).

paho does the protocol; the event loop tells it when its socket is readable or
writable, and calls ``loop_misc`` for keepalive. Paho may open the socket in an
executor thread (its connect is blocking), so socket callbacks hop to the loop.

The client is paho's own ``Client``: no private method is overridden. The opt-in, version-checked
``fast_client.BufferedClient`` (``fast=True``) is the exception, for paho-mqtt 2.2.0 only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

logger = logging.getLogger(__name__)


def client_from_url(url: str, client_id: str, *, fast: bool = False, **options: Any) -> tuple[paho.Client, str, int]:
    """A paho client for ``mqtt://[user:pass@]host[:port]`` (``mqtts://`` for TLS), and where to connect.

    ``fast``: the opt-in ``BufferedClient`` (overrides paho 2.2.0's private socket and packet methods;
    ``UnsupportedPaho`` on any other paho)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, not {url!r}")
    client_class = paho.Client
    if fast:
        from .fast_client import buffered_client_class

        client_class = buffered_client_class()
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id, **options)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or "") or None)
    if parts.scheme == "mqtts":
        client.tls_set()
    return client, parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883)


def no_delay(sock: Any) -> None:
    """Send each packet at once (``TCP_NODELAY``): paho leaves Nagle's algorithm on, which holds a small
    packet (a PUBACK, a publication) while an earlier one is unacknowledged, until the broker's delayed
    ACK comes, tens of milliseconds later. (A TLS socket passes it to its TCP socket; a WebSocket
    transport, or a socket that is not TCP, is left as it is.)"""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class AsyncioDriver:
    """Registers a paho client's socket with the running event loop."""

    def __init__(self, client: paho.Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self._loop_thread = threading.get_ident()
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._misc = loop.create_task(self._misc_loop())

    def _in_loop(self, function: Callable[..., object], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            function(*args)
        else:
            self.loop.call_soon_threadsafe(function, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        no_delay(sock)
        self._in_loop(self.loop.add_reader, sock.fileno(), client.loop_read)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self.loop.remove_reader, sock.fileno())

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self.loop.add_writer, sock.fileno(), client.loop_write)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self.loop.remove_writer, sock.fileno())

    async def _misc_loop(self) -> None:
        while True:
            self.client.loop_misc()  # keepalive pings and their timeouts
            await asyncio.sleep(1)

    async def connect(self, host: str, port: int, keepalive: int, **options: Any) -> None:
        """Open the connection (in a thread: paho's TCP connect blocks); CONNACK arrives later.
        ``options``: paho's ``connect`` keywords (MQTT 5's ``clean_start`` and ``properties``)."""
        call = partial(self.client.connect, host, port, keepalive, **options)
        await self.loop.run_in_executor(None, call)

    def close(self) -> None:
        self._misc.cancel()
