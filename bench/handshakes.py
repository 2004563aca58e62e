"""Server CPU per WebSocket handshake: the gateway against trivial applications and the tutorial.

A load generator on these machines tops out near 3,000 handshakes a second, so the rate says as
much about the clients as about the server: what is compared is the server's CPU time (user +
system) over a window, divided by the handshakes in it. Each target is measured on a fresh process:

- ``gateway``: ``config.asgi`` under the gateway's daphne: upgrade, origin and session, access,
  joining a room its process serves already (its history from memory), presence;
- ``trivial-gateway-daphne``, ``trivial-daphne``, ``trivial-uvicorn``: ``bench/trivial.py`` (accept,
  nothing else) under the gateway's daphne, plain daphne and uvicorn: what the server itself costs;
- ``baseline``: the Channels tutorial under daphne.

A round opens ``handshakes`` connections (``connect_concurrency`` at a time) and holds them; the window
runs from the first handshake until the server is idle again (so work a join leaves behind, such as
the presence write, is counted), and excludes closing them. The figure is the cheapest of
``handshake_rounds`` rounds: these 2 cores are shared, and interference only ever adds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import servers
from .clients import SubscriberPool
from .config import Sizes
from .scenarios import SATURATED, Run

logger = logging.getLogger("bench")

HANDSHAKE_PREFIX = "bench_hs"
TARGETS = ("gateway", "trivial-gateway-daphne", "trivial-daphne", "trivial-uvicorn", "baseline")
TARGET_RATIO = 1.2  # the gateway's CPU per handshake ÷ the trivial app's under daphne (issue #17)
IDLE = {"below": 0.02, "interval": 0.2}  # a short interval: the idle tail is charged to the window


def room_count(sizes: Sizes) -> int:
    return -(-sizes.handshakes // sizes.handshake_room_size)


def start(run: Run, target: str) -> tuple[int, servers.ServerProcess]:
    name = f"hs-{target}"
    if target == "gateway":
        return servers.start_gateway_daphne(name, run.gateway_env, run.cleanup, run.log_dir)
    if target == "baseline":
        prefix = run.gateway_env["CHANNEL_LAYER_PREFIX"] + "-baseline-hs"
        return servers.start_baseline_daphne(name, run.redis_url, prefix, run.cleanup, run.log_dir)
    server = target.removeprefix("trivial-")
    return servers.start_asgi(name, server, "bench.trivial:application", run.gateway_env, run.cleanup, run.log_dir)


async def measure(run: Run, target: str) -> dict:
    sizes = run.sizes
    port, process = start(run, target)
    size = sizes.handshake_room_size  # consecutive handshakes join the same room, as a room's readers do
    paths = [("127.0.0.1", port, f"/ws/chat/{HANDSHAKE_PREFIX}{n // size}/") for n in range(sizes.handshakes)]
    warm = SubscriberPool(1)  # a reader per room, held throughout: the rooms stay open in the hub
    run.cleanup.add(f"{target} handshake warm-up", warm.close)
    rounds: list[dict] = []
    try:
        opened = await asyncio.to_thread(warm.connect, paths[::size], concurrency=sizes.connect_concurrency)
        if opened["failed"]:
            raise RuntimeError(f"{target}: warm-up handshakes failed: {opened['errors']}")
        for number in range(sizes.handshake_rounds):
            rounds.append(await measure_round(run, target, process.pid, paths))
            logger.info(
                "handshakes %s, round %d: %.3f ms CPU each, %.0f/s",
                target,
                number + 1,
                rounds[-1]["cpu_ms_per_handshake"],
                rounds[-1]["handshakes_per_s"],
            )
    finally:
        await asyncio.to_thread(warm.close)
        process.stop()
    best = min(rounds, key=lambda figures: figures["cpu_ms_per_handshake"])
    return {**best, "rounds": rounds}


async def measure_round(run: Run, target: str, pid: int, paths: list[tuple]) -> dict:
    sizes = run.sizes
    pool = SubscriberPool(sizes.idle_processes)
    run.cleanup.add(f"{target} handshakes", pool.close)
    try:
        await asyncio.to_thread(servers.wait_until_idle, [pid], **IDLE)
        server_before, clients_before = servers.cpu_seconds([pid]), servers.cpu_by_pid(pool.pids)
        opened = await asyncio.to_thread(pool.connect, paths, concurrency=sizes.connect_concurrency)
        settle = await asyncio.to_thread(servers.wait_until_idle, [pid], **IDLE)
        server_cpu = servers.cpu_seconds([pid]) - server_before
        clients_after = servers.cpu_by_pid(pool.pids)
    finally:
        await asyncio.to_thread(pool.close)
    if opened["failed"]:
        run.warn(f"handshakes {target}: {opened['failed']} failed: {opened['errors'][:2]}")
    if not opened["opened"]:
        raise RuntimeError(f"handshakes {target}: none opened: {opened['errors']}")
    client_cores = max((clients_after[pid] - clients_before[pid]) / opened["seconds"] for pid in clients_before)
    if client_cores >= SATURATED:
        run.warn(f"handshakes {target}: a client process used {client_cores:.0%} of a core: it may be the limit")
    return {
        "handshakes": opened["opened"],
        "failed": opened["failed"],
        "connect_s": opened["seconds"],
        "settle_s": settle,
        "handshakes_per_s": opened["opened"] / opened["seconds"],
        "server_cpu_s": server_cpu,
        "cpu_ms_per_handshake": 1000 * server_cpu / opened["opened"],
        "client_cores_max": client_cores,
    }


async def handshakes(run: Run) -> dict[str, Any]:
    """Every target in turn, then the gateway ÷ trivial-under-daphne ratio against ``TARGET_RATIO``."""
    result: dict[str, Any] = {}
    chosen = TARGETS if run.sizes.handshake_targets == "all" else run.sizes.handshake_targets.split(",")
    for target in chosen:
        if target not in TARGETS:
            raise ValueError(f"handshake target {target!r}: choose from {','.join(TARGETS)}")
        try:
            result[target] = await measure(run, target)
        except Exception as exc:
            logger.exception("handshakes %s failed", target)
            run.warn(f"handshakes {target} failed: {exc!r} (server logs in {run.log_dir})")
            result[target] = {"error": repr(exc)}
    gateway = result.get("gateway", {}).get("cpu_ms_per_handshake")
    floor = result.get("trivial-daphne", {}).get("cpu_ms_per_handshake")
    result["gateway_over_trivial_daphne"] = gateway / floor if gateway and floor else None
    own = result.get("trivial-gateway-daphne", {}).get("cpu_ms_per_handshake")
    result["gateway_over_trivial_own_daphne"] = gateway / own if gateway and own else None
    return result
