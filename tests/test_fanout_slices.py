"""A big room's fan-out is handed out in slices: the loop's other work runs in between, and what comes
meanwhile reaches every reader once, in order, in the next round (fanout/hub.py ``Audience``)."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.layers import InMemoryChannelLayer

from fanout.hub import ROOM_MESSAGES, SLICE_SECONDS, Hub
from fanout.outgoing import Outgoing
from tests.test_fanout_package import Stored

ROOM = "lobby"


def busy(seconds: float) -> None:
    """A reader's write, as it costs on a real socket (a system call each)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class SlowReader:
    """Records every call in order; each costs ``cost`` seconds of the loop."""

    def __init__(self, cost: float = 20e-6, everyone: asyncio.Event | None = None, expect: int = 0) -> None:
        self.calls: list[object] = []
        self.cost, self.everyone, self.expect = cost, everyone, expect
        self.stream = None  # a consumer's own stream, when the test gives it one

    def take_messages(self, items: list[Outgoing]) -> None:
        busy(self.cost)
        if self.stream is not None:
            self.stream.push(items)
            return
        self.got([item.id for item in items])

    def got(self, ids: list[int]) -> None:
        self.calls.append(ids)

    def take_presence(self, item: Outgoing) -> None:
        busy(self.cost)
        self.calls.append(item.text)

    def ids(self) -> list[int]:
        return [n for call in self.calls if isinstance(call, list) for n in call]


class BrokenReader(SlowReader):
    def take_messages(self, items: list[Outgoing]) -> None:
        raise RuntimeError("a reader's own failure")


def messages(*ids: int) -> dict:
    return {"type": ROOM_MESSAGES, "group": f"g.{ROOM}", "messages": [[n, f'"m{n}"'] for n in ids], "at": 0.0}


async def until(condition, timeout: float = 10) -> None:
    """Let the loop run until ``condition()`` holds (the hub's slices are callbacks of the loop)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


@pytest.fixture
async def hub():
    hub = Hub(InMemoryChannelLayer(), Stored(), group=lambda room: f"g.{room}", keep=10, refresh_seconds=60)
    yield hub
    hub.close()


async def joined(hub: Hub, count: int) -> list[SlowReader]:
    readers = [SlowReader() for _ in range(count)]
    for reader in readers:
        await hub.join(ROOM, reader)
    return readers


async def test_a_big_rooms_fan_out_hands_the_loop_back_before_it_ends(hub):
    """3,000 readers at 20 µs each is 60 ms of work: other callbacks run long before the last reader has
    it, and no stretch between them is more than a slice and one check's readers."""
    readers = await joined(hub, 3000)
    loop = asyncio.get_running_loop()
    served_when_others_ran: list[int] = []
    gaps: list[float] = []
    last = time.perf_counter()

    def tick() -> None:
        nonlocal last
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        served = sum(1 for reader in readers if reader.calls)
        served_when_others_ran.append(served)
        if served < len(readers):
            loop.call_soon(tick)

    loop.call_soon(tick)
    hub.broadcast(messages(4))
    await until(lambda: all(reader.calls for reader in readers))
    assert any(0 < served < len(readers) for served in served_when_others_ran)
    assert len(served_when_others_ran) > 10  # it was given the loop many times during the round
    assert max(gaps) < SLICE_SECONDS + 0.05  # (a loaded machine's scheduler can add a little)
    assert all(reader.calls == [[4]] for reader in readers)


async def test_what_comes_during_a_round_goes_to_everyone_once_in_order_in_one_round(hub):
    readers = await joined(hub, 250)
    await hub.join(ROOM, BrokenReader())  # its failures cost the others nothing
    readers += await joined(hub, 250)
    hub.broadcast(messages(4))
    assert 0 < sum(1 for reader in readers if reader.calls) < len(readers)  # the round is under way
    hub.broadcast(messages(5))
    hub.broadcast(messages(6, 7))
    await until(lambda: all(reader.ids() == [4, 5, 6, 7] for reader in readers))
    assert all(reader.calls == [[4], [5, 6, 7]] for reader in readers)  # 5 to 7: one write each


async def test_presence_keeps_its_place_between_rounds_of_messages(hub):
    readers = await joined(hub, 300)
    hub.broadcast(messages(4))
    hub.broadcast({"type": "room.presence", "group": f"g.{ROOM}", "text": '{"here": 1}'})
    hub.broadcast(messages(5))
    await until(lambda: all(len(reader.calls) == 3 for reader in readers))
    assert all(reader.calls == [[4], '{"here": 1}', [5]] for reader in readers)


async def test_a_reader_who_joins_during_a_round_gets_each_message_once(hub):
    """It is not in the round under way, and is in the next: what it has from the room's newest (the
    messages passed on already) its own stream drops when its round brings them."""
    readers = await joined(hub, 500)
    hub.broadcast(messages(4))
    hub.broadcast(messages(5))  # waits for the round of #4
    late = SlowReader()
    late.stream = hub.stream(ROOM, lambda items: late.got([item.id for item in items]))
    audience = await hub.join(ROOM, late)
    history, start = list(audience.recent), audience.last_id  # as a WebSocket consumer begins
    late.got([item.id for item in history if item.id > 3])
    late.stream.begin(start)
    hub.broadcast(messages(6))
    await until(lambda: 6 in late.ids() and all(reader.ids() == [4, 5, 6] for reader in readers))
    assert late.ids() == [4, 5, 6]


async def test_a_closed_hub_hands_nothing_more_out(hub):
    readers = await joined(hub, 2000)
    hub.broadcast(messages(4))
    hub.close()
    served = sum(1 for reader in readers if reader.calls)
    assert 0 < served < len(readers)
    for _ in range(100):
        await asyncio.sleep(0)
    assert sum(1 for reader in readers if reader.calls) == served
