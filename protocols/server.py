"""What the adapter servers share: a start/stop lifecycle, ``serve()`` to run until cancelled, and
``cancel_and_wait`` to end their background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

CANCEL_AGAIN_SECONDS = 0.5  # a task still running this long after its cancellation is cancelled again


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task], seconds: float, again_after: float = CANCEL_AGAIN_SECONDS
) -> set[asyncio.Task]:
    """Cancel ``tasks`` and wait for them to end, at most ``seconds``; those still running then.

    One that is still running ``again_after`` seconds after its cancellation is cancelled again: under
    Python 3.11, ``asyncio.wait_for`` loses a cancellation that comes as what it waits for completes
    (it returns the result instead: CPython gh-86296, gone with 3.12's ``wait_for``), and redis-py sends
    every command through ``wait_for`` once a socket timeout is set. A task that loops over such calls
    (a channel-layer receive) then goes on as though it had never been cancelled; one cancellation
    more, landing anywhere else, ends it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(again_after, remaining))
    return pending


class ProtocolServer:
    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def serve(self) -> None:
        """Run until cancelled, then stop cleanly."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()
