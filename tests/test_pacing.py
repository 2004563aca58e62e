"""A room's live delivery while it is held: batches wait, go out together once an interval, in order;
other rooms and a room no longer held go out at once."""

from __future__ import annotations

import asyncio

from gateway.pacing import LivePacer


class Deliveries:
    """What the pacer delivered, room by room, and an event for each delivery."""

    def __init__(self) -> None:
        self.made: list[tuple[str, list[int]]] = []
        self.arrived = asyncio.Condition()

    async def __call__(self, room: str, events: list[dict]) -> None:
        async with self.arrived:
            self.made.append((room, [event["id"] for event in events]))
            self.arrived.notify_all()

    async def wait(self, count: int, timeout: float = 5) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.made) >= count), timeout)


def events(*ids: int) -> list[dict]:
    return [{"id": n} for n in ids]


async def test_held_batches_go_out_together_in_order_and_other_rooms_at_once():
    deliveries = Deliveries()
    pacer = LivePacer(deliveries, interval=0.2)
    await pacer.send("busy", events(1, 2))  # not held: at once
    assert deliveries.made == [("busy", [1, 2])]
    pacer.hold("busy")
    for batch in (events(3), events(4, 5), events(6)):
        await pacer.send("busy", batch)
    await pacer.send("quiet", events(1))  # another room is not held back
    assert deliveries.made == [("busy", [1, 2]), ("quiet", [1])]
    await deliveries.wait(3)
    assert deliveries.made[2] == ("busy", [3, 4, 5, 6])  # one delivery, in order
    assert pacer.coalesced == 4


async def test_a_batch_after_the_hold_waits_for_the_held_ones():
    deliveries = Deliveries()
    pacer = LivePacer(deliveries, interval=0.2)
    pacer.hold("room")
    await pacer.send("room", events(1))
    await deliveries.wait(1)
    assert deliveries.made == [("room", [1])]
    await pacer.send("room", events(2))  # the hold is over and nothing waits: at once
    assert deliveries.made == [("room", [1]), ("room", [2])]
