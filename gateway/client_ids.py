"""The MQTT adapter's default client id: stable across restarts, different for every adapter running.

A persistent session belongs to a client id: an adapter that comes back after a crash must use the id
it had, and two adapters must never share one (the broker would hand the session back and forth,
dropping each in turn). ``gateway-<node>-<slot>``: the node is the host's name (``MQTT_NODE_NAME``),
the slot the lowest number no other adapter on this host holds, claimed with a file lock that the
process holds for its life. The kernel releases it when the process dies, however it dies, so a
restarted adapter takes its slot, and with it its session, back.
"""

from __future__ import annotations

import fcntl
import os
import re
from typing import IO

MAX_SLOTS = 1000

_held: list[IO] = []  # the locks of this process: held until it exits


def node_part(node: str) -> str:
    """``node`` as it may appear in a client id and a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", node).strip(".-")[:64] or "node"


def claim_client_id(node: str, directory: str) -> str:
    """``gateway-<node>-<n>`` for the lowest ``n`` whose lock in ``directory`` no running process holds."""
    node = node_part(node)
    os.makedirs(directory, exist_ok=True)
    for slot in range(1, MAX_SLOTS + 1):
        handle = open(os.path.join(directory, f"gateway-mqtt-{node}-{slot}.lock"), "a")  # noqa: SIM115 (held: closed with the process)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return f"gateway-{node}-{slot}"
    raise RuntimeError(f"{MAX_SLOTS} MQTT adapters already hold a client id in {directory}")
