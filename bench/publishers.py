"""Ways bench messages enter a room: HTTP POST, MQTT publish, a WebSocket frame, a mail; and reading back.

Each publisher is driven from the orchestrator's event loop and is cheap next to the servers:
messages are few (one message becomes a thousand deliveries), so what matters is that each
publisher says when a message was accepted and never holds the servers back.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import threading
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .wsproto import WsClient, handshake_request

HTTP, MQTT, EMAIL, WEBSOCKET = 0, 1, 2, 3  # publisher numbers in "bench <publisher>:<sequence> <time>"
PUBLISHER_NAMES = {HTTP: "http", MQTT: "mqtt", EMAIL: "email", WEBSOCKET: "websocket"}


class _ClosedUnanswered(ConnectionError):
    """The server closed a kept-alive connection before answering the request sent on it."""


class HttpClient:
    """HTTP/1.1 keep-alive connections to one server; one request at a time on each."""

    def __init__(self, port: int, connections: int = 8) -> None:
        self.port = port
        self._idle: asyncio.Queue = asyncio.Queue()
        self._size = connections
        self._made = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A connection, and whether it was used before (the server may have closed it meanwhile)."""
        if self._idle.empty() and self._made < self._size:
            self._made += 1
            try:
                return *await asyncio.open_connection("127.0.0.1", self.port), False
            except BaseException:
                self._made -= 1
                raise
        return *await self._idle.get(), True

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """One request; the status and the JSON body. A kept-alive connection the server closed while it
        was idle is replaced once, as any HTTP client does."""
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        for attempt in range(2):
            reader, writer, reused = await self._connection()
            status_line = b""
            try:
                writer.write(head + data)
                status_line = await reader.readline()
                if not status_line:  # closed before answering: nothing was done, safe to send again
                    raise _ClosedUnanswered
                length, keep = 0, True
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection" and value.strip().lower() == "close":
                        keep = False
                content = await reader.readexactly(length)
            except (_ClosedUnanswered, ConnectionResetError, BrokenPipeError) as exc:
                writer.close()
                self._made -= 1
                if reused and attempt == 0 and (isinstance(exc, _ClosedUnanswered) or not status_line):
                    continue
                raise ConnectionError(f"{method} {path}: the server closed the connection") from exc
            except BaseException:
                writer.close()
                self._made -= 1
                raise
            break
        if keep:
            self._idle.put_nowait((reader, writer))
        else:
            writer.close()
            self._made -= 1
        status = int(status_line.split()[1])
        try:
            return status, json.loads(content)
        except ValueError:
            return status, content.decode(errors="replace")

    def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()


class MqttPublisher:
    """A paho client (its own network thread) publishing at QoS 1 with many messages in flight."""

    def __init__(self, url: str, inflight: int = 1000) -> None:
        parts = urlsplit(url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:10]}")
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)  # no limit: the bench decides how much is outstanding
        self._lock = threading.Lock()
        self._acked = 0
        self._all_acked = threading.Condition(self._lock)
        self.client.on_publish = self._on_publish
        if parts.username:
            self.client.username_pw_set(parts.username, parts.password)
        self.client.connect(parts.hostname, parts.port or 1883)
        self.client.loop_start()
        self.published = 0

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._all_acked:
            self._acked += 1
            self._all_acked.notify_all()

    def publish(self, topic: str, text: str) -> None:
        info = self.client.publish(topic, text.encode(), qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"MQTT publish failed: {paho.error_string(info.rc)}")
        self.published += 1

    def wait_acked(self, timeout: float) -> int:
        """Wait until the broker acknowledged every message published; how many it did."""
        with self._all_acked:
            self._all_acked.wait_for(lambda: self._acked >= self.published, timeout)
            return self._acked

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WsPublisher:
    """A WebSocket connection that sends bench messages as the tutorial's client does: ``{"message": …}``.

    In the tutorial every connection is in the room's group, so this one gets every message too:
    they are read and thrown away (not counted as deliveries).
    """

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.connection: WsClient | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        request = handshake_request("127.0.0.1", self.port, self.path)
        _, self.connection = await loop.create_connection(
            lambda: WsClient(request, lambda payload: None), "127.0.0.1", self.port
        )
        await asyncio.wait_for(self.connection.opened, 30)

    def send(self, text: str) -> None:
        if self.connection.closed:
            raise ConnectionError("the publisher's WebSocket was closed by the server")
        self.connection.send_text(json.dumps({"message": text}))

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def send_mails(
    port: int, recipient: str, texts: list[str], sessions: int, on_accepted: Callable[[int], None]
) -> list[str]:
    """Send one mail per text over ``sessions`` parallel SMTP sessions (threads), each session sending
    its share one mail after another; ``on_accepted(index)`` after each 250. The errors met."""
    errors: list[str] = []

    def session(indexes: list[int]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                for index in indexes:
                    sender = f"bench{index % sessions}@example.com"
                    mail = (
                        f"From: Bench <{sender}>\r\nTo: {recipient}\r\nSubject: {texts[index]}\r\n"
                        f"Message-ID: <{uuid.uuid4().hex}@example.com>\r\n\r\nfrom the bench\r\n"
                    )
                    refused = client.sendmail(sender, [recipient], mail)
                    if refused:
                        errors.append(f"refused: {refused}")
                    else:
                        on_accepted(index)
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(repr(exc))

    threads = [
        threading.Thread(target=session, args=(list(range(number, len(texts), sessions)),), daemon=True)
        for number in range(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


async def stored_texts(http: HttpClient, room: str, after: int, page: int = 500) -> list[dict]:
    """Every message stored in ``room`` after id ``after``, read page by page over the HTTP API."""
    found: list[dict] = []
    while True:
        status, body = await http.request("GET", f"/api/rooms/{room}/messages?after={after}&limit={page}")
        if status != 200:
            raise RuntimeError(f"GET messages of {room}: {status} {body}")
        messages = body["messages"]
        found.extend(messages)
        if len(messages) < page:
            return found
        after = messages[-1]["id"]


async def last_id(http: HttpClient, room: str) -> int:
    status, body = await http.request("GET", f"/api/rooms/{room}/messages?limit=1")
    if status != 200:
        raise RuntimeError(f"GET messages of {room}: {status} {body}")
    return body["messages"][-1]["id"] if body["messages"] else 0
