"""gateway/batches.py: what is handed in while a batch is written goes in the next one, in order."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batches import Batches


async def test_items_handed_in_during_a_write_go_in_the_next_batch_and_then_runs_between():
    written, done, gate = [], [], asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        written.append(list(items))
        await gate.wait()
        return [item * 10 for item in items]

    async def then(results: list[int]) -> None:
        done.append(list(results))

    idle = []
    batches = Batches(write, most=3, then=then, idle=lambda: idle.append(True))
    first = batches.submit(1)
    await asyncio.sleep(0)  # the first batch is being written: [1]
    rest = [batches.submit(n) for n in range(2, 7)]
    gate.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50, 60]
    await asyncio.sleep(0)
    assert written == [[1], [2, 3, 4], [5, 6]]  # at most 3 a batch, in the order handed in
    assert done == [[10], [20, 30, 40], [50, 60]] and idle == [True]


async def test_a_failed_batch_fails_its_items_and_the_next_batch_is_still_written():
    calls = []

    async def write(items: list[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) == 1:
            await asyncio.sleep(0)
            raise ConnectionError("database away")
        return items

    batches = Batches(write)
    failing = batches.submit("a")
    await asyncio.sleep(0)
    later = batches.submit("b")
    with pytest.raises(ConnectionError):
        await failing
    assert await later == "b" and calls == [["a"], ["b"]]


async def test_with_gather_the_items_of_that_moment_go_in_one_batch_in_order():
    """``gather``: a batch waits that long for more before it is written (writes nobody waits on)."""
    written = []

    async def write(items: list[int]) -> list[int]:
        written.append(list(items))
        return items

    batches = Batches(write, gather=1.0)
    handed_in = [batches.submit(1)]
    for n in range(2, 5):
        await asyncio.sleep(0)  # the loop runs between them: without gather, [1] would be written alone
        handed_in.append(batches.submit(n))
    assert await asyncio.gather(*handed_in) == [1, 2, 3, 4]
    assert written == [[1, 2, 3, 4]]
