"""A room's messages to one reader, in id order and each once, whatever the layer did on the way."""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from gateway import rooms

logger = logging.getLogger(__name__)


async def stay_in_group(layer, group: str, channel: str) -> None:
    """Join ``group`` again now and then: memberships expire, and a restarted Redis forgot them.
    Whatever was missed meanwhile, the reader's ``RoomStream`` fills in from the history."""
    while True:
        await asyncio.sleep(settings.GROUP_REFRESH_SECONDS)
        try:
            await layer.group_add(group, channel)
        except Exception:  # the layer is down: try again next time
            logger.warning("Could not rejoin %s", group, exc_info=True)


class RoomStream:
    """Decides what a reader gets next. Ids in a room are contiguous, so a live message whose id is
    not the next one means something went missing (a layer that dropped it, a Redis restart, another
    process's message still on its way): what is missing is read from the history, in order."""

    def __init__(self, room: str, last_sent: int) -> None:
        self.room, self.last_sent = room, last_sent

    async def follow(self, message_id: int, text: str) -> list[tuple[int, str]]:
        """The (id, JSON text) pairs to send now for a live message."""
        if message_id <= self.last_sent:
            return []  # already sent (history, a filled gap, or a late duplicate)
        if message_id == self.last_sent + 1:
            self.last_sent = message_id
            return [(message_id, text)]
        missed = await rooms.history(self.room, after=self.last_sent, limit=rooms.CATCH_UP_LIMIT)
        found = [(message["id"], rooms.to_json(message)) for message in missed]
        if found:
            self.last_sent = found[-1][0]
        return found
