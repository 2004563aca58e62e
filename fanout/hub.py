"""One channel-layer subscription per room per process, broadcast to that process's readers.

Stock Channels gives every reader a channel of its own, so a message to a room of N readers costs N
layer messages, N consumer dispatches and N thread-pool hops. Here the process holds one channel and
joins each room's group once: a batch of room messages arrives once, is put in id order once (gaps
read from the history once), and every local reader is handed it with a plain call, in the hub's task.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable
from operator import methodcaller
from typing import Any, Protocol

from .channel import Receive, open_channel
from .outgoing import Outgoing
from .stream import Deliver, ReadMissed, RoomStream

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "hub"  # the layer's capacity setting for "hub.*" channels is the hub's backlog
ROOM_MESSAGES = "room.messages"  # {"group", "messages": [[id, json], ...], "at": time.time() when sent}
ROOM_PRESENCE = "room.presence"  # {"group", "text": json}: one room's (sent by earlier versions)
ROOMS_PRESENCE = "rooms.presence"  # {"rooms": [[group, json], ...]}: to every hub, through ``presence_group``


class History(Protocol):
    """What the hub reads from the room service: stored messages, as its readers are sent them."""

    async def after(self, room: str, after: int) -> list[Outgoing]:
        """The room's messages after id ``after``, oldest first (as many as a reader catches up at once)."""

    async def newest(self, room: str, limit: int) -> tuple[int, list[Outgoing]]:
        """The id of the room's newest message (0 when none) and up to ``limit`` messages up to it."""


def _nothing(*_: object) -> None:
    return None


class Reader(Protocol):
    """A room's reader. Both calls run in the hub's task and must not wait on anything: a reader that
    needs to (a database read, a slow socket) hands that to a task of its own."""

    def take_messages(self, items: list[Outgoing]) -> None:
        """Room messages, in id order with no gap since the previous call, ids possibly before the
        reader's own start (its ``RoomStream`` drops those)."""

    def take_presence(self, item: Outgoing) -> None:
        """Who is in the room now (``item.text`` is the presence object as JSON)."""


SLICE_SECONDS = 0.001  # a room's fan-out hands the loop back this often: nothing else waits behind it longer
CHECK_EVERY = 32  # readers handed a batch between two looks at the clock


class Audience:
    """A room's readers in this process, the room's live messages put in order once for all of them, and
    the newest of those messages, which a reader joining (or catching up a little) is sent from here
    rather than from the database: exactly what was passed on up to now, so nothing falls between.

    A big room's fan-out is handed out in slices of about ``SLICE_SECONDS``, the loop's other work (a post
    coming in, another room's messages) running in between, rather than holding the loop for the whole
    room (10 ms for 1,000 readers). What comes meanwhile waits for the round in progress to end, then goes
    to everyone in one round, so a busy room's readers get fewer, larger writes."""

    __slots__ = ("room", "history", "read_missed", "readers", "stream", "recent", "opening", "waiting", "round")

    def __init__(self, room: str, keep: int, history: History, read_missed: ReadMissed) -> None:
        self.room = room
        self.history, self.read_missed = history, read_missed
        self.readers: set[Reader] = set()
        self.stream = RoomStream(room, self.deliver, read_missed)  # held until the hub knows where the room stands
        self.recent: deque[Outgoing] = deque(maxlen=keep)
        self.opening: asyncio.Task | None = None  # the first reading of where the room stands
        self.waiting: deque[list[Outgoing] | Outgoing] = deque()  # message batches and presence, in order
        self.round: Round | None = None  # the fan-out being handed out, if one is

    @property
    def last_id(self) -> int:
        """The last message passed on to the readers (every one up to it, in order)."""
        return self.stream.last_sent

    async def catch_up(self, after: int) -> tuple[list[Outgoing], int]:
        """For a reader who has just joined and has had every message up to id ``after``: the messages
        after it, and the id its live messages follow. From the newest ones kept here when they reach
        back far enough, else from the history (read after joining, so nothing falls between), one
        reading shared by everyone here who missed the same messages: after a restart, thousands of
        readers come back with the same last id, and one query serves them all. A reading that ends
        before the live messages begin (one begun before this reader joined, or cut at the catch-up
        limit) is followed up by the reader's stream, which reads a gap when the next message comes.
        The list may be shared: read it, do not change it."""
        if after >= self.last_id:
            return [], after
        if self.recent and self.recent[0].id <= after + 1:
            return [item for item in self.recent if item.id > after], self.last_id
        messages = await self.read_missed(self.room, after)
        end = messages[-1].id if messages else after
        if self.recent and self.recent[0].id <= end + 1 <= self.recent[-1].id:
            # A shared reading may have begun before this reader joined: what came since is kept here.
            messages = [*messages, *(item for item in self.recent if item.id > end)]
            end = messages[-1].id
        return messages, end

    def deliver(self, items: list[Outgoing]) -> None:
        """Messages in id order, passed on now: kept for joiners at once (a reader who joins before
        its round reaches it gets them in its catch-up, and its stream drops the round's copy)."""
        self.recent.extend(items)
        self._hand_out(items)

    def presence(self, item: Outgoing) -> None:
        self._hand_out(item)

    def close(self) -> None:
        """Hand nothing more out (the room is left, or the process is stopping)."""
        self.waiting.clear()
        if self.round is not None:
            self.round.cancel()
            self.round = None

    def _hand_out(self, what: list[Outgoing] | Outgoing) -> None:
        self.waiting.append(what)
        if self.round is None:
            self._next_slice()

    def _next_slice(self) -> None:
        """Hand out until the slice's time is up; then go on at the loop's next turn."""
        deadline = time.perf_counter() + SLICE_SECONDS
        while True:
            current = self.round
            if current is None:
                if not self.waiting:
                    return
                current = self.round = Round(self._take_waiting(), tuple(self.readers))
            if not current.go_on(self.room, deadline):
                current.later = asyncio.get_running_loop().call_soon(self._next_slice)
                return
            self.round = None

    def _take_waiting(self) -> list[Outgoing] | Outgoing:
        """The next thing waiting, with the message batches right after it if it is one (one round)."""
        first = self.waiting.popleft()
        if isinstance(first, Outgoing) or not self.waiting or isinstance(self.waiting[0], Outgoing):
            return first
        batches = [first]
        while self.waiting and not isinstance(self.waiting[0], Outgoing):
            batches.append(self.waiting.popleft())  # type: ignore[arg-type]
        return [item for batch in batches for item in batch]


class Round:
    """One batch of messages (or a presence) being handed to a room's readers, as they were when it began."""

    __slots__ = ("what", "readers", "position", "later")

    def __init__(self, what: list[Outgoing] | Outgoing, readers: tuple[Reader, ...]) -> None:
        self.what, self.readers, self.position = what, readers, 0
        self.later: asyncio.Handle | None = None

    def go_on(self, room: str, deadline: float) -> bool:
        """Hand on to the next readers; ``True`` once every one has it, ``False`` when ``deadline`` came first."""
        what, readers = self.what, self.readers
        hand = methodcaller("take_presence" if isinstance(what, Outgoing) else "take_messages", what)
        position, end = self.position, len(readers)
        while position < end:
            reader = readers[position]
            position += 1
            try:
                hand(reader)
            except Exception:  # one broken reader must not cost the others the message
                logger.exception("A reader of %s failed on %r", room, what)
            if not position % CHECK_EVERY and position < end and time.perf_counter() > deadline:
                self.position = position
                return False
        return True

    def cancel(self) -> None:
        if self.later is not None:
            self.later.cancel()


class Hub:
    """This process's readers of rooms, behind one channel of the layer.

    ``history`` reads the room service's stored messages; ``group(room)`` names a room's layer group;
    ``keep`` messages of each room are kept for readers who join; the groups are joined again every
    ``refresh_seconds``; ``on_lag(seconds)`` is told how long each batch took from its sender to here,
    ``on_layer_error()`` of each failed receive. Every hub also joins ``presence_group``, if given:
    the presence of every room announcing in a moment comes in one message there (``ROOMS_PRESENCE``),
    not a message to each room's group, and each hub passes on the rooms it has readers in."""

    def __init__(
        self,
        layer: Any,
        history: History,
        *,
        group: Callable[[str], str],
        keep: int,
        refresh_seconds: float,
        presence_group: str | None = None,
        on_lag: Callable[[float], None] = _nothing,
        on_layer_error: Callable[[], None] = _nothing,
    ) -> None:
        self.layer, self.history, self.group = layer, history, group
        self.keep, self.refresh_seconds, self.presence_group = keep, refresh_seconds, presence_group
        self.on_lag, self.on_layer_error = on_lag, on_layer_error
        self.audiences: dict[str, Audience] = {}  # by group name
        self.channel: str | None = None
        self._membership = asyncio.Lock()  # joining and leaving the layer's groups, one at a time
        self._tasks: list[asyncio.Task] = []
        self.closed = False
        self._readings: dict[tuple[str, int], asyncio.Task] = {}

    def stream(self, room: str, deliver: Deliver) -> RoomStream:
        """A reader's own stream of the room (where its history ends and live messages begin)."""
        return RoomStream(room, deliver, self.read_missed)

    async def read_missed(self, room: str, after: int) -> list[Outgoing]:
        """The room's messages after id ``after``. Everyone who missed the same messages in this process
        (an audience, or readers whose catch-up ended at the same id) shares one reading."""
        key = (room, after)
        reading = self._readings.get(key)
        if reading is None:
            reading = self._readings[key] = asyncio.get_running_loop().create_task(
                self.history.after(room, after), context=contextvars.Context()
            )
            reading.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(reading)  # one reader leaving does not cancel the others' reading

    def _forget(self, key: tuple[str, int], done: asyncio.Task) -> None:
        if self._readings.get(key) is done:
            del self._readings[key]

    async def join(self, room: str, reader: Reader) -> Audience:
        """From now on ``reader`` gets the room's messages: every one after the audience's ``last_id``
        at the moment this returns, in order."""
        group = self.group(room)
        audience = self.audiences.get(group)
        if audience is None:  # (nothing awaited before it is in place: one audience per room)
            audience = self.audiences[group] = Audience(room, self.keep, self.history, self.read_missed)
            loop = asyncio.get_running_loop()
            audience.opening = loop.create_task(self._open(group, audience), context=contextvars.Context())
        audience.readers.add(reader)
        # Its opening, shared by everyone who joins meanwhile (always set while the stream has not begun).
        if not audience.stream.begun and audience.opening is not None:
            try:
                await asyncio.shield(audience.opening)
            except BaseException:
                audience.readers.discard(reader)
                raise
        return audience

    async def _open(self, group: str, audience: Audience) -> None:
        """Join the room's group, then read where the room stands: stored after the group was joined,
        heard on the layer (and held meanwhile); up to it, here."""
        try:
            async with self._membership:  # joining the layer's group, never beside a refresh leaving it
                if self.audiences.get(group) is not audience:
                    raise RuntimeError(f"{group} was left before it was joined")
                await self._start()
                await self.layer.group_add(group, self.channel)
            last_id, newest = await self.history.newest(audience.room, self.keep)
        except BaseException:
            if self.audiences.get(group) is audience:
                del self.audiences[group]  # the next reader tries again
            raise
        audience.recent.extend(newest)
        audience.stream.begin(last_id)

    def leave(self, room: str, reader: Reader) -> None:
        """The group itself is left at the next refresh that finds it empty: a reader who reconnects at
        once (a page reload) finds it still joined."""
        audience = self.audiences.get(self.group(room))
        if audience is not None:
            audience.readers.discard(reader)

    def broadcast(self, message: dict) -> None:
        kind = message.get("type")
        if kind == ROOMS_PRESENCE:
            for group, text in message["rooms"]:
                if (audience := self.audiences.get(group)) is not None:
                    audience.presence(Outgoing(0, text))
            return
        audience = self.audiences.get(message.get("group", ""))
        if audience is None:
            return
        if kind == ROOM_MESSAGES:
            audience.stream.push([Outgoing(message_id, text) for message_id, text in message["messages"]])
            self.on_lag(time.time() - message["at"])
        elif kind == ROOM_PRESENCE:
            audience.presence(Outgoing(0, message["text"]))

    def close(self) -> None:
        """Stop receiving and refreshing, and every room's reading of its history (the process is stopping).
        The loops also end at their next turn: on CPython 3.11 a cancellation that lands as a Redis
        command completes can be lost inside redis-py's ``wait_for`` (protocols.server.cancel_and_wait)."""
        self.closed = True
        for task in (*self._tasks, *self._readings.values()):
            task.cancel()
        for audience in self.audiences.values():
            audience.stream.close()
            audience.close()
            if audience.opening is not None:
                audience.opening.cancel()

    async def _start(self) -> None:
        if self.channel is None:
            channel, receive_one = await open_channel(self.layer, CHANNEL_PREFIX)
            if self.presence_group is not None:
                await self.layer.group_add(self.presence_group, channel)
            self.channel = channel
            loop = asyncio.get_running_loop()
            # Contexts of their own, not the first reader's: they outlive it.
            self._tasks = [
                loop.create_task(self._receive(receive_one), context=contextvars.Context()),
                loop.create_task(self._refresh(), context=contextvars.Context()),
            ]

    async def _receive(self, receive_one: Receive) -> None:
        delay = 0.1
        while not self.closed:
            try:
                message = await receive_one()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer is down (Redis restarting): wait, then listen again
                self.on_layer_error()
                logger.warning("Channel layer receive failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)  # backoff
                delay = min(delay * 2, 5)
                continue
            delay = 0.1
            try:
                self.broadcast(message)
            except Exception:  # a malformed message must not end the hub
                logger.exception("Could not broadcast a %r", message.get("type"))

    async def _refresh(self) -> None:
        """Join the groups again now and then: memberships expire, and a restarted Redis forgot them.
        What was missed meanwhile, the room's stream reads from the history when the next message comes."""
        while not self.closed:
            await asyncio.sleep(self.refresh_seconds)
            async with self._membership:
                if self.presence_group is not None and self.channel is not None:
                    try:
                        await self.layer.group_add(self.presence_group, self.channel)
                    except Exception:
                        logger.warning("Could not refresh group %s", self.presence_group, exc_info=True)
                for group, audience in list(self.audiences.items()):
                    try:
                        if audience.readers:
                            await self.layer.group_add(group, self.channel)
                        else:
                            self.audiences.pop(group, None)
                            audience.stream.close()
                            audience.close()
                            await self.layer.group_discard(group, self.channel)
                    except Exception:  # the layer is down: try again next time
                        logger.warning("Could not refresh group %s", group, exc_info=True)
