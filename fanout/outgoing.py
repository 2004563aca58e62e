"""What a process sends its live readers: each message serialised once and, for WebSockets, framed once."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


def text_frame(text: str) -> bytes:
    """One RFC 6455 text frame as a server sends it: final, unmasked, no extension bits."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Outgoing:
    """A message (or presence snapshot) that every reader in the process is sent alike. The JSON text
    is made once; the WebSocket frame once, for the first reader that writes frames."""

    __slots__ = ("id", "text", "_frame")

    def __init__(self, id: int, text: str) -> None:
        self.id, self.text = id, text
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = text_frame(self.text)
        return self._frame

    def __repr__(self) -> str:
        return f"<Outgoing #{self.id}>"


def frames(items: Sequence[Outgoing]) -> bytes:
    """The frames of ``items``, back to back: one write for a whole batch."""
    return items[0].frame if len(items) == 1 else b"".join(item.frame for item in items)


class Outbox:
    """Sends what a synchronous caller hands it through an async ``send``, in order, in a task of its own
    that runs only while there is something to send.

    At most ``limit`` bytes wait to be sent, besides one item (a slow reader costs only itself): an item
    that would pass it is not taken, what waits is dropped, nothing more is taken, and ``overflow()`` is
    called, once. An item taken when nothing waits is taken whatever its size (a history, a batch)."""

    __slots__ = ("send", "queue", "task", "queued", "limit", "overflow", "closed")

    def __init__(self, send: Callable[[Any], Awaitable[None]], limit: int, overflow: Callable[[], None]) -> None:
        self.send = send
        self.queue: deque[tuple[Any, int]] = deque()
        self.task: asyncio.Task | None = None
        self.queued = 0  # bytes waiting in the queue
        self.limit = limit
        self.overflow = overflow
        self.closed = False

    def put(self, item: Any, size: int) -> None:
        """Queue ``item``, ``size`` bytes on the wire."""
        if self.closed:
            return
        if self.queue and self.queued + size > self.limit:
            self.close()
            self.overflow()
            return
        self.queued += size
        self.queue.append((item, size))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue:
                item, size = self.queue.popleft()
                self.queued -= size
                await self.send(item)
        finally:
            self.task = None

    def close(self) -> None:
        """Send nothing more: what waits is dropped."""
        self.closed = True
        self.queue.clear()
        self.queued = 0
        if self.task is not None:
            self.task.cancel()
