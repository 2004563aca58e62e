"""gateway/answers.py: answers kept for a moment, one lookup shared by everyone asking meanwhile."""

from __future__ import annotations

import asyncio
import gc
import time

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


async def test_an_answer_in_the_second_half_of_its_life_is_refreshed_without_anyone_waiting():
    """A busy room's message that found the answer expired waited for a lookup (~20 ms on a loaded
    adapter) every ``seconds``; asked for in the second half of its life, the answer is given at once
    and looked up again meanwhile, once."""
    calls, gate = [], asyncio.Event()

    async def ask(room: str) -> int:
        calls.append(room)
        if len(calls) > 1:
            await gate.wait()
        return len(calls)

    answers = RecentAnswers(ask, seconds=60)
    assert await answers("lobby") == 1
    answers.answers[("lobby",)] = (1, time.monotonic() + 10)  # 50 of its 60 seconds gone
    assert await answers("lobby") == 1  # at once: the refresh waits on the gate
    assert await answers("lobby") == 1
    await asyncio.sleep(0)  # a turn of the loop: the refresh starts
    assert calls == ["lobby", "lobby"]  # one refresh, however many ask meanwhile
    gate.set()
    await answers.asking[("lobby",)]
    assert await answers("lobby") == 2
    assert calls == ["lobby", "lobby"]


async def test_a_failed_refresh_keeps_the_answer_for_the_rest_of_its_life_and_is_not_left_unretrieved():
    calls, reported = [], []

    async def ask(room: str) -> int:
        calls.append(room)
        if len(calls) == 2:
            raise ConnectionError("database away")
        return len(calls)

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    answers = RecentAnswers(ask, seconds=60)
    assert await answers("lobby") == 1
    answers.answers[("lobby",)] = (1, time.monotonic() + 10)
    assert await answers("lobby") == 1
    refresh = answers.asking[("lobby",)]
    await asyncio.wait([refresh])
    del refresh
    gc.collect()  # an exception never retrieved is reported when its task is collected
    assert reported == []
    assert await answers("lobby") == 1  # still within its life
    answers.answers[("lobby",)] = (1, time.monotonic() - 1)  # its life over: asked again, waited for
    assert await answers("lobby") == 3
