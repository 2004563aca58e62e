"""Where an idle WebSocket's memory goes: ``python -m bench.memprobe N [--tracemalloc FRAMES]``.

A diagnostic, not a scenario: one fresh ``python -m gateway.serve config.asgi:application`` in the bench's production
profile (its own database, Redis prefix and rooms of ``--room-size``), ``--warm`` connections, a first
snapshot, ``N`` more connections, a second snapshot; then, per connection of the ``N``: RSS growth,
the Python objects gained by type (``gc`` and ``sys.getsizeof``; an instance's ``__dict__`` is counted
as its own line, and asking for it makes one where Python kept the attributes inline), and with
``--tracemalloc`` the bytes allocated since the first snapshot and still held, by package and by line
(the innermost frame in a package or in this project). Tracing slows daphne several times: keep ``N``
to a few hundred and ``--concurrency`` low, or handshakes time out.

daphne runs under ``bench.memprobe --serve``: the gateway's daphne command line (``gateway.serve``)
with a SIGUSR1 handler that writes the snapshot (the first one also starts tracemalloc, so start-up is not traced).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
import tracemalloc
import types

OWN = ("site-packages/", str(pathlib.Path(__file__).resolve().parent.parent) + "/")


def _serve() -> None:
    """The gateway's daphne command line (``python -m gateway.serve``), with the snapshot hook."""
    count = [0]

    def snapshot(signum: int, frame: object) -> None:
        out = f"{os.environ['MEMPROBE_OUT']}.{count[0]}"
        count[0] += 1
        gc.collect()
        counts: collections.Counter = collections.Counter()
        sizes: collections.Counter = collections.Counter()
        dicts = set()
        objects = gc.get_objects()
        for o in objects:
            if isinstance(o, (type, types.MethodType)):  # a method's __dict__ is its function's
                continue
            attributes = getattr(o, "__dict__", None)
            if type(attributes) is dict:
                dicts.add(id(attributes))
                name = f"__dict__ of {type(o).__module__}.{type(o).__qualname__}"
                counts[name] += 1
                sizes[name] += sys.getsizeof(attributes)
        for o in objects:
            if id(o) not in dicts:
                name = f"{type(o).__module__}.{type(o).__qualname__}"
                counts[name] += 1
                sizes[name] += sys.getsizeof(o)
        detail = _one_connection(objects)
        del objects
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(out + ".trace")
        elif os.environ.get("MEMPROBE_FRAMES"):
            tracemalloc.start(int(os.environ["MEMPROBE_FRAMES"]))
        pathlib.Path(out + ".json").write_text(json.dumps({"counts": counts, "sizes": sizes, "detail": detail}))
        pathlib.Path(out + ".done").touch()

    signal.signal(signal.SIGUSR1, snapshot)
    sys.path.insert(0, os.getcwd())
    from gateway.server import GatewayCommandLine

    sys.argv = ["gateway.serve", *sys.argv[2:]]
    GatewayCommandLine.entrypoint()


DETAIL_TYPES = ("LeanWebSocketProtocol", "ChatConsumer", "Server")  # one of each, attribute by attribute


def _one_connection(objects: list) -> dict:
    """For the last-made instance of each of ``DETAIL_TYPES``: its attributes' container values that are not
    empty-and-small, with their sizes (``sys.getsizeof``, the container alone), largest first."""
    found: dict = {}
    for o in objects:
        name = type(o).__name__
        if name in DETAIL_TYPES and isinstance(getattr(o, "__dict__", None), dict):
            found[name] = o
    detail = {}
    for name, o in found.items():
        rows = []
        for attribute, value in vars(o).items():
            if isinstance(value, (list, dict, set, tuple, bytes, str)) or hasattr(value, "__dict__"):
                rows.append((sys.getsizeof(value), attribute, type(value).__name__))
        detail[name] = sorted(rows, reverse=True)[:25]
    return detail


def _owner(trace: tracemalloc.Trace, by_line: bool) -> str:
    for frame in reversed(list(trace.traceback)):  # the innermost frame first
        name = frame.filename
        for marker in OWN:
            if marker in name:
                short = name.split(marker, 1)[1]
                return f"{short}:{frame.lineno}" if by_line else short.split("/")[0]
    frame = trace.traceback[-1]
    return f"stdlib {pathlib.Path(frame.filename).name}:{frame.lineno}" if by_line else "stdlib"


def _report(prefix: str, n: int, rss: tuple[int, int], top: int) -> None:
    print(f"\nRSS growth: {(rss[1] - rss[0]) / 1024 / n:.2f} KB per connection ({n} connections)")
    first, second = (json.loads(pathlib.Path(f"{prefix}.{i}.json").read_text()) for i in (0, 1))
    rows = []
    for name in set(first["sizes"]) | set(second["sizes"]):
        grown = second["sizes"].get(name, 0) - first["sizes"].get(name, 0)
        count = second["counts"].get(name, 0) - first["counts"].get(name, 0)
        rows.append((grown, count, name))
    rows.sort(reverse=True)
    print(f"Python objects (gc, getsizeof): {sum(r[0] for r in rows) / n:.0f} B per connection")
    for grown, count, name in rows[:top]:
        print(f"  {grown / n:7.0f} B  {count / n:6.2f}  {name}")
    for name, rows in second.get("detail", {}).items():
        print(f"One {name}'s attributes (getsizeof): " + ", ".join(f"{a}={t}:{n}" for n, a, t in rows))
    trace = pathlib.Path(f"{prefix}.1.trace")
    if not trace.exists():
        return
    ours = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__, all_frames=True)]
    snapshot = tracemalloc.Snapshot.load(str(trace)).filter_traces(ours)  # not the snapshot's own
    for by_line in (False, True):
        held: collections.Counter = collections.Counter()
        for item in snapshot.traces:
            held[_owner(item, by_line)] += item.size
        if not by_line:
            print(f"Allocated since the first snapshot and held: {sum(held.values()) / n:.0f} B per connection")
        for name, size in held.most_common(top):
            print(f"  {size / n:7.0f} B  {name}")


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        return _serve()
    from . import servers
    from .clients import SubscriberPool, raise_nofile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("connections", type=int)
    parser.add_argument("--warm", type=int, default=200, help="connections before the first snapshot")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes at once")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="trace allocations")
    parser.add_argument("--top", type=int, default=30, help="lines per table")
    arguments = parser.parse_args()
    raise_nofile(arguments.warm + arguments.connections + 4096)
    cleanup = servers.Cleanup()
    log_dir = pathlib.Path(tempfile.mkdtemp(prefix="memprobe-"))
    try:
        database = servers.create_database(cleanup)
        prefix = servers.unique("memprobe-")
        redis_url = "redis://127.0.0.1:6379/0"
        cleanup.add("redis keys", lambda: servers.forget_redis_keys(redis_url, prefix))
        (log_dir / "static").mkdir()
        env = servers.gateway_env(
            database, redis_url, prefix, "mqtt://memprobe:unused@127.0.0.1:1", STATIC_ROOT=log_dir / "static"
        )
        env.update(MEMPROBE_OUT=str(log_dir / "snapshot"), MEMPROBE_FRAMES=str(arguments.tracemalloc or ""))
        total = arguments.warm + arguments.connections
        servers.run_python(env, "manage.py", "migrate", "--noinput", "-v0")
        servers.run_python(env, "-m", "bench.gwsetup", "--idle", "memprobe", str(-(-total // arguments.room_size)))
        port = servers.free_port()
        argv = [servers.PYTHON, "-m", "bench.memprobe", "--serve", "-b", "127.0.0.1", "-p", str(port)]
        process = servers.ServerProcess("daphne", [*argv, "config.asgi:application"], env, log_dir).start(cleanup)
        servers.wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        pool = SubscriberPool(arguments.processes)
        cleanup.add("clients", pool.close)
        targets = [("127.0.0.1", port, f"/ws/chat/memprobe{n // arguments.room_size}/") for n in range(total)]

        def snapshot(number: int) -> None:
            os.kill(process.pid, signal.SIGUSR1)
            while not (log_dir / f"snapshot.{number}.done").exists():
                time.sleep(0.2)

        pool.connect(targets[: arguments.warm], concurrency=arguments.concurrency)
        servers.wait_until_idle([process.pid])
        snapshot(0)  # first: what it allocates is not charged to the connections
        before = servers.rss(process.pid)
        opened = pool.connect(targets[arguments.warm :], concurrency=arguments.concurrency)
        servers.wait_until_idle([process.pid])
        after = servers.rss(process.pid)
        snapshot(1)
        rate = opened["opened"] / opened["seconds"] if opened["seconds"] else 0
        print(f"{opened['opened']} opened, {opened['failed']} failed, {rate:.0f} handshakes/s; logs in {log_dir}")
        if opened["opened"]:
            _report(str(log_dir / "snapshot"), opened["opened"], (before, after), arguments.top)
    finally:
        cleanup.close()


if __name__ == "__main__":
    main()
