"""What the adapter servers share: a start/stop lifecycle, and ``serve()`` to run until cancelled."""

from __future__ import annotations

import asyncio


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
