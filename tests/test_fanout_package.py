"""The fan-out engine (fanout/) stands alone: it imports nothing of the gateway, and runs on any
history it is handed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from channels.layers import InMemoryChannelLayer

from fanout.hub import ROOM_MESSAGES, ROOMS_PRESENCE, Hub
from fanout.outgoing import Outgoing
from tests.support import ROOT


def test_the_engine_imports_nothing_of_the_gateway():
    code = (
        "import sys, fanout.hub, fanout.stream, fanout.outgoing, fanout.channel, fanout.redis_layer; "
        "found = sorted(m for m in sys.modules if m.split('.')[0] in ('gateway', 'consumers', 'config')); "
        "assert not found, found"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


class Stored:
    """A room service's history, as the hub reads it: messages 1 to 3 stored before anyone joined."""

    def __init__(self) -> None:
        self.messages = [Outgoing(n, f'"m{n}"') for n in (1, 2, 3)]

    async def after(self, room: str, after: int) -> list[Outgoing]:
        return [item for item in self.messages if item.id > after]

    async def newest(self, room: str, limit: int) -> tuple[int, list[Outgoing]]:
        return self.messages[-1].id, self.messages[-limit:]


class Reader:
    def __init__(self) -> None:
        self.got: list[int] = []
        self.arrived = asyncio.Event()

    def take_messages(self, items: list[Outgoing]) -> None:
        self.got += [item.id for item in items]
        self.arrived.set()

    def take_presence(self, item: Outgoing) -> None:
        pass


async def test_a_hub_on_any_layer_and_history_delivers_in_order_and_fills_gaps():
    layer, history, lags = InMemoryChannelLayer(), Stored(), []
    hub = Hub(layer, history, group=lambda room: f"g.{room}", keep=2, refresh_seconds=60, on_lag=lags.append)
    reader = Reader()
    try:
        audience = await hub.join("lobby", reader)
        assert [item.id for item in audience.recent] == [2, 3] and audience.last_id == 3
        history.messages += [Outgoing(4, '"m4"'), Outgoing(5, '"m5"')]
        # #4 never reaches the layer (lost on the way): #5 makes the hub read it from the history first.
        message = {"type": ROOM_MESSAGES, "group": "g.lobby", "messages": [[5, '"m5"']], "at": 0.0}
        await layer.group_send("g.lobby", message)
        async with asyncio.timeout(5):
            while reader.got != [4, 5]:
                reader.arrived.clear()
                await reader.arrived.wait()
        assert len(lags) == 1
    finally:
        hub.close()


class GatedHistory(Stored):
    """Messages 1 to 10 stored; each reading takes its snapshot at once and answers when let go, so
    readers can be made to overlap."""

    def __init__(self) -> None:
        self.messages = [Outgoing(n, f'"m{n}"') for n in range(1, 11)]
        self.readings = 0
        self.started, self.go = asyncio.Event(), asyncio.Event()

    async def after(self, room: str, after: int) -> list[Outgoing]:
        self.readings += 1
        self.started.set()
        snapshot = [item for item in self.messages if item.id > after]
        await self.go.wait()
        return snapshot


async def test_readers_who_missed_the_same_messages_share_one_reading_and_miss_nothing_since():
    """After a restart thousands of readers come back with the same last id: one database reading
    serves them all, and a reader who joined while it was under way still gets what came meanwhile."""
    history = GatedHistory()
    hub = Hub(InMemoryChannelLayer(), history, group=lambda room: f"g.{room}", keep=2, refresh_seconds=60)
    try:
        early = [await hub.join("lobby", Reader()) for _ in range(50)]
        catch_ups = [asyncio.ensure_future(audience.catch_up(1)) for audience in early]
        await asyncio.wait_for(history.started.wait(), 5)
        hub.broadcast({"type": ROOM_MESSAGES, "group": "g.lobby", "messages": [[11, '"m11"']], "at": 0.0})
        late = await hub.join("lobby", Reader())  # after #11 went live: it is not sent #11 live
        catch_ups.append(asyncio.ensure_future(late.catch_up(1)))
        history.go.set()
        async with asyncio.timeout(5):
            results = await asyncio.gather(*catch_ups)
        assert history.readings == 1
        for messages, start in results:
            assert [item.id for item in messages] == list(range(2, 12)) and start == 11
    finally:
        hub.close()


class Watcher(Reader):
    def __init__(self) -> None:
        super().__init__()
        self.presence: list[str] = []
        self.told = asyncio.Event()

    def take_presence(self, item: Outgoing) -> None:
        self.presence.append(item.text)
        self.told.set()


async def test_the_presence_of_many_rooms_comes_in_one_message_and_each_room_gets_its_own():
    """Every hub joins the presence group: one message there carries the rooms announcing in a moment,
    and each hub passes on only the rooms it has readers in, each room's readers only their room's."""
    layer = InMemoryChannelLayer()
    hub = Hub(layer, Stored(), group=lambda room: f"g.{room}", keep=2, refresh_seconds=60, presence_group="p")
    north, south = Watcher(), Watcher()
    try:
        await hub.join("north", north)
        await hub.join("south", south)
        rooms = [["g.north", '{"room": "north"}'], ["g.elsewhere", '{"room": "elsewhere"}'], ["g.south", "{}"]]
        await layer.group_send("p", {"type": ROOMS_PRESENCE, "rooms": rooms})
        async with asyncio.timeout(5):
            await north.told.wait()
            await south.told.wait()
        assert north.presence == ['{"room": "north"}'] and south.presence == ["{}"]
    finally:
        hub.close()


class AnsweredAsCancelled(InMemoryChannelLayer):
    """A receive sent as redis-py sends a command, through ``asyncio.wait_for``: under Python 3.11 a
    cancellation that lands once the answer is in but before ``wait_for`` has seen it is lost
    (CPython gh-86296), and the receive returns the message."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.answer: asyncio.Future | None = None

    async def receive(self, channel: str) -> dict:
        self.answer = asyncio.get_running_loop().create_future()
        self.asked.set()
        return await asyncio.wait_for(self.answer, 10)


async def test_a_closed_hub_stops_receiving_even_when_its_cancellation_is_lost():
    """A process stopping closes its hub as a receive is answered: the receive loop's one cancellation is
    lost, it hands the message on, and then it stops instead of asking the layer again for ever."""
    layer = AnsweredAsCancelled()
    hub = Hub(layer, Stored(), group=lambda room: f"g.{room}", keep=2, refresh_seconds=60)
    await hub.join("lobby", Reader())
    receiving = hub._tasks[0]
    await asyncio.wait_for(layer.asked.wait(), 5)
    layer.asked.clear()
    layer.answer.set_result({"type": "room.presence", "group": "g.lobby", "text": "{}"})
    hub.close()  # cancels the loop before wait_for sees the answer
    done, _ = await asyncio.wait([receiving], timeout=5)
    assert done == {receiving} and not layer.asked.is_set()  # ended, without asking again
