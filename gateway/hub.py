"""The fan-out engine's hub (``fanout.hub.Hub``) wired to this gateway: its room service's history,
its group names, its settings and metrics."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from fanout.hub import Hub
from fanout.outgoing import Outgoing

from . import metrics, rooms
from .topics import PRESENCE_GROUP, room_group


class StoredHistory:
    """``fanout.hub.History`` from ``gateway.rooms``: each message as its JSON, made once here."""

    async def after(self, room: str, after: int) -> list[Outgoing]:
        messages = await rooms.history(room, after=after, limit=rooms.CATCH_UP_LIMIT)
        return [Outgoing(message["id"], rooms.to_json(message)) for message in messages]

    async def newest(self, room: str, limit: int) -> tuple[int, list[Outgoing]]:
        last_id, messages = await rooms.newest(room, limit)
        return last_id, [Outgoing(message["id"], rooms.to_json(message)) for message in messages]


def make_hub(layer: Any) -> Hub:
    """A hub on ``layer`` for this gateway's rooms."""
    return Hub(
        layer,
        StoredHistory(),
        group=room_group,
        keep=settings.HISTORY_ON_JOIN,
        refresh_seconds=settings.GROUP_REFRESH_SECONDS,
        presence_group=PRESENCE_GROUP,
        on_lag=metrics.fanout_seconds.observe,
        on_layer_error=metrics.layer_errors.inc,
    )
