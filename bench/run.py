"""``make bench``: set up, run the chosen scenarios against the gateway and the baseline, print and save.

    python -m bench.run [--quick] [--scenarios fanout,ingest,...,handshakes,mqttws] [--subscribers N] ...

A scenario that fails is reported as failed and the others still run; the exit status is 1 then.
Targets missed are reported, not failed: this is a benchmark, not a test.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import handshakes, mqttws, report, scenarios, servers, storm
from .clients import raise_nofile
from .config import parse

logger = logging.getLogger("bench")


async def _scenario(run: scenarios.Run, name: str, coroutine) -> dict:
    """Run one scenario; a failure becomes ``{"error": ...}`` (with the traceback in the log)."""
    try:
        return await coroutine
    except Exception as exc:
        logger.error("%s failed: %r\n%s", name, exc, traceback.format_exc())
        run.warn(f"{name} failed: {exc!r} (server logs in {run.log_dir})")
        return {"error": repr(exc)}


def set_up(run: scenarios.Run) -> None:
    """A fresh database with the bench's rooms, a broker, the gateway's environment."""
    sizes = run.sizes
    database = servers.create_database(run.cleanup)
    run.redis_url = f"redis://127.0.0.1:6379/{sizes.redis_db}"
    prefix = servers.unique("bench-")
    run.cleanup.add("redis keys", lambda: servers.forget_redis_keys(run.redis_url, prefix))
    run.mqtt_url, _ = servers.start_mosquitto(run.cleanup, run.log_dir)
    static = run.log_dir / "static"  # WhiteNoise (DEBUG off) wants STATIC_ROOT to exist; nothing is collected
    static.mkdir()
    run.gateway_env = servers.gateway_env(database, run.redis_url, prefix, run.mqtt_url, STATIC_ROOT=static)
    broker = run.mqtt_url.rsplit("@", 1)[-1]  # its host and port, not its password
    logger.info("setting up: database %s, Redis prefix %s, broker %s", database.rsplit("/", 1)[1], prefix, broker)
    servers.run_python(run.gateway_env, "manage.py", "migrate", "--noinput", "-v0")
    idle_rooms = -(-sizes.idle_connections // sizes.idle_room_size)
    rooms = [scenarios.FANOUT_ROOM, scenarios.INGEST_ROOM, scenarios.SCALE_ROOM]
    rooms.append(storm.STORM_ROOM)
    rooms += [f"{handshakes.HANDSHAKE_PREFIX}{n}" for n in range(handshakes.room_count(sizes))]
    servers.run_python(run.gateway_env, "-m", "bench.gwsetup", *rooms, "--idle", scenarios.IDLE_PREFIX, str(idle_rooms))


async def run_all(run: scenarios.Run, results: dict) -> None:
    """Fill ``results`` scenario by scenario (so an interrupted run still reports what it measured)."""
    chosen = run.sizes.scenarios
    set_up(run)  # in this thread: servers started from a worker thread would get SIGTERM when it ends
    if {"fanout", "ingest", "scaleout"} & set(chosen):
        logger.info("starting the gateway: daphne, runmqtt, runsmtp")
        deployment = scenarios.GatewayDeployment(run)
        try:
            if "fanout" in chosen and "gateway" in run.sizes.targets:
                results["fanout"] = {
                    "gateway": await _scenario(run, "gateway fan-out", scenarios.gateway_fanout(run, deployment))
                }
            if "ingest" in chosen:
                results["ingest"] = await _scenario(run, "ingest", scenarios.ingest(run, deployment))
            if "scaleout" in chosen:  # last: it adds a second daphne and holds both to a CPU limit
                results["scaleout"] = await _scenario(run, "scale-out", scenarios.scaleout(run, deployment))
        finally:
            deployment.stop()
    if "fanout" in chosen and "baseline" in run.sizes.targets:
        results.setdefault("fanout", {})["baseline"] = await _scenario(
            run, "baseline fan-out", scenarios.baseline_fanout(run)
        )
    if "handshakes" in chosen:
        results["handshakes"] = await _scenario(run, "handshakes", handshakes.handshakes(run))
    if "mqttws" in chosen:
        results["mqttws"] = await _scenario(run, "Mosquitto WebSocket peer", mqttws.mqttws(run))
    if "connections" in chosen:
        results["connections"] = {}
        for kind in run.sizes.targets:
            results["connections"][kind] = await _scenario(
                run, f"{kind} idle connections", scenarios.connections(run, kind)
            )
    if "storm" in chosen:
        results["storm"] = await _scenario(run, "reconnect storm", storm.storm(run))


def _stop_on_sigterm() -> None:
    """SIGTERM (make interrupted, CI) unwinds like Ctrl-C, so every process started is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    sizes, arguments = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    _stop_on_sigterm()
    # The servers and the client processes inherit it: thousands of connections each (as root the hard
    # limit is raised as far as the largest scenario needs, as LimitNOFILE would be: docs/deploy.md)
    wanted = max(sizes.idle_connections, sizes.subscribers) + 4096
    if raise_nofile(wanted) < wanted:
        logger.warning(
            "open files are limited to %d here (its hard limit: raising it needs root with CAP_SYS_RESOURCE, "
            "or LimitNOFILE/ulimit -Hn before the bench starts); a server holds fewer connections than that",
            raise_nofile(),
        )
    started = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{stamp}-"))
    run = scenarios.Run(sizes=sizes, log_dir=log_dir, cleanup=servers.Cleanup())
    logger.info("bench %s: scenarios %s; server logs in %s", stamp, ",".join(sizes.scenarios), log_dir)
    clock = time.monotonic()
    results: dict = {}
    failed = False
    try:
        asyncio.run(run_all(run, results))
    except KeyboardInterrupt:
        logger.error("interrupted: stopping everything")
        failed = True
    except Exception:
        logger.error("the bench could not run:\n%s", traceback.format_exc())
        failed = True
    finally:
        run.cleanup.close()
    failed = failed or any(_failed(value) for value in results.values())
    table = report.rows(results, sizes)
    output = Path(arguments.results) / f"{stamp}.json"
    report.write_json(output, sizes, results, table, run.warnings, started.isoformat(), not failed)
    print()
    print(report.render(table))
    for warning in run.warnings:
        print(f"warning: {warning}")
    print(f"\n{time.monotonic() - clock:.0f}s; results in {output}; server logs in {log_dir}")
    return 1 if failed else 0


def _failed(value: object) -> bool:
    if isinstance(value, dict):
        return "error" in value or any(_failed(item) for item in value.values())
    return False


if __name__ == "__main__":
    sys.exit(main())
