"""gateway/answers.py: answers kept for a moment, one lookup shared by everyone asking meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from gateway.answers import RecentAnswers


async def test_callers_share_one_lookup_and_its_answer_is_kept():
    asked, gate = [], asyncio.Event()

    async def ask(room: str) -> str:
        asked.append(room)
        await gate.wait()
        return f"answer for {room}"

    answers = RecentAnswers(ask, seconds=60)
    waiting = [asyncio.ensure_future(answers("lobby")) for _ in range(5)]
    await asyncio.sleep(0)  # let them all ask
    gate.set()
    assert await asyncio.gather(*waiting) == ["answer for lobby"] * 5
    assert await answers("lobby") == "answer for lobby"
    assert await answers("kitchen") == "answer for kitchen"
    assert asked == ["lobby", "kitchen"]


async def test_an_old_answer_is_asked_again_and_a_failure_is_not_kept():
    calls = []

    async def ask(room: str) -> int:
        calls.append(room)
        if len(calls) == 2:
            raise ConnectionError("database away")
        return len(calls)

    answers = RecentAnswers(ask, seconds=0)  # every answer is already old
    assert await answers("lobby") == 1
    with pytest.raises(ConnectionError):
        await answers("lobby")
    assert await answers("lobby") == 3


async def test_a_caller_giving_up_does_not_cancel_the_lookup_for_the_others():
    gate = asyncio.Event()

    async def ask(room: str) -> str:
        await gate.wait()
        return "ok"

    answers = RecentAnswers(ask, seconds=60)
    impatient, patient = asyncio.ensure_future(answers("lobby")), asyncio.ensure_future(answers("lobby"))
    await asyncio.sleep(0)
    impatient.cancel()
    gate.set()
    assert await patient == "ok"
