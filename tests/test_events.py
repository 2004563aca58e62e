"""The room as Server-Sent Events: live messages, and exact catch-up with Last-Event-ID."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import threading

from tests.support import ahttp, unique


class SseClient:
    """Reads an event stream in a thread; ``next()`` returns the next parsed event."""

    def __init__(self, port: int, path: str, last_event_id: int | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        self.events: queue.Queue = queue.Queue()
        self.last_event_id: str | None = None  # as EventSource keeps it: an id with no data sets it too
        self.cursor_set = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "id" in event:
                        self.last_event_id = event["id"]
                        self.cursor_set.set()
                    if "data" in event:
                        self.events.put(event)
                    event = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(": ")
                    event[field] = value
        except (OSError, ValueError, AttributeError, http.client.HTTPException):  # closed under us
            pass

    async def next(self, timeout: float = 10) -> dict:
        event = await asyncio.to_thread(self.events.get, True, timeout)
        return {"id": int(event["id"]), "event": event["event"], "message": json.loads(event["data"])}

    def close(self) -> None:
        self.connection.sock.shutdown(2)
        self.connection.close()


async def post(gateway, room: str, text: str) -> dict:
    status, body = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": text})
    assert status == 201
    return body


async def test_sse_streams_live_messages_and_catches_up_exactly(gateway):
    room = unique()
    path = f"/api/rooms/{room}/events"
    await post(gateway, room, "before anyone listened")
    client = await asyncio.to_thread(SseClient, gateway.http_port, path)
    assert client.response.status == 200
    assert client.response.getheader("Content-Type").startswith("text/event-stream")
    first = await post(gateway, room, "one")
    event = await client.next()
    assert event == {"id": first["id"], "event": "message", "message": first}
    client.close()

    missed = [await post(gateway, room, text) for text in ("two", "three")]
    client = await asyncio.to_thread(SseClient, gateway.http_port, path, first["id"])
    assert [await client.next() for _ in missed] == [{"id": m["id"], "event": "message", "message": m} for m in missed]
    live = await post(gateway, room, "four")
    assert (await client.next())["message"] == live  # nothing repeated before it
    client.close()


async def test_a_stream_that_saw_no_event_still_resumes_where_it_stood(gateway):
    """The stream's first lines set the browser's Last-Event-ID (``id:`` with no data) before any message:
    a reader who sees none before it reconnects resumes from there and misses nothing."""
    room = unique()
    path = f"/api/rooms/{room}/events"
    before = await post(gateway, room, "before it listened")
    client = await asyncio.to_thread(SseClient, gateway.http_port, path)
    assert await asyncio.to_thread(client.cursor_set.wait, 10)
    assert client.last_event_id == str(before["id"])
    client.close()
    missed = [await post(gateway, room, text) for text in ("one", "two")]
    client = await asyncio.to_thread(SseClient, gateway.http_port, path, int(client.last_event_id))
    assert [await client.next() for _ in missed] == [{"id": m["id"], "event": "message", "message": m} for m in missed]
    client.close()
