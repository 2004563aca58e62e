"""How big each scenario is: defaults for the full run, ``--quick`` for a run of a minute or two, flags for each.

Every size can also be given in the environment as ``BENCH_<NAME>`` (``BENCH_SUBSCRIBERS=500``);
flags win over the environment, which wins over the defaults.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from typing import Any

SCENARIOS = ("fanout", "ingest", "scaleout", "connections", "handshakes", "mqttws", "storm")
TARGETS = ("gateway", "baseline")


def _size(default: object, text: str) -> Any:
    """A size with its help text (shown by --help)."""
    return field(default=default, metadata={"help": text})


@dataclass
class Sizes:
    subscribers: int = _size(1000, "WebSocket readers in the fan-out room")
    client_processes: int = _size(2, "processes those readers are spread over")
    ramp_start: int = _size(2000, "deliveries a second offered in the first step of the sustained phase")
    ramp_factor: float = _size(1.5, "each step offers this many times the last")
    ramp_max: int = _size(1_000_000, "no step above this")
    ramp_min: int = _size(250, "when the first step falls behind, steps go down to this")
    ramp_refine: int = _size(2, "after the first failed step, this many steps halfway between it and the last good one")
    ways_in: str = _size("http+mqtt", "how fan-out messages enter the gateway: http+mqtt (alternately), http or mqtt")
    duration: float = _size(5.0, "seconds of each step of the sustained phase")
    latency_load: int = _size(10_000, "deliveries a second offered in the fixed-load latency phase")
    latency_load_high: int = _size(
        100_000, "deliveries a second of a second fixed-load phase, the gateway only (issue #17: p99 <= 20 ms); 0: none"
    )
    latency_duration: float = _size(10.0, "seconds of the fixed-load phase")
    sample_every: int = _size(10, "one reader in this many records latencies")
    connect_concurrency: int = _size(32, "WebSocket handshakes in progress at once, over all client processes")
    mqtt_messages: int = _size(3000, "MQTT QoS 1 messages in the ingest scenario")
    mqtt_publisher: str = _size(
        "paho",
        "ingest: what publishes the MQTT messages: paho (a Python client in the bench's process) or mosquitto_pub "
        "(Mosquitto's C client, far cheaper: the machine's cores go to the gateway)",
    )
    mqtt_adapters: int = _size(
        2, "ingest: MQTT again with this many runmqtt processes in one shared-subscription group (below 2: skipped)"
    )
    mails: int = _size(600, "mails in the ingest scenario")
    smtp_sessions: int = _size(16, "parallel SMTP sessions")
    idle_connections: int = _size(10_000, "idle WebSockets held on one server process")
    idle_processes: int = _size(4, "client processes holding them")
    idle_room_size: int = _size(10, "idle connections per room")
    idle_budget: float = _size(240.0, "seconds to open them in; those not started by then are reported as missing")
    handshakes: int = _size(2000, "handshakes: WebSockets opened (and held) in each round, on each target")
    handshake_rounds: int = _size(3, "handshakes: rounds per target; the cheapest round's CPU per handshake counts")
    handshake_room_size: int = _size(
        10, "handshakes: connections per room (each room opened beforehand: its history from memory)"
    )
    handshake_targets: str = _size(
        "all",
        "handshakes: which targets (comma-separated): gateway, trivial-gateway-daphne, trivial-daphne, "
        "trivial-uvicorn, baseline",
    )
    storm_clients: int = _size(10_000, "storm: readers in one room when the ASGI process is restarted")
    storm_processes: int = _size(4, "storm: client processes they are spread over (each from an address of its own)")
    storm_rate: float = _size(5.0, "storm: messages a second published (MQTT) throughout")
    storm_before: float = _size(3.0, "storm: seconds of messages flowing before the restart")
    storm_history: int = _size(50, "storm: HISTORY_ON_JOIN of its gateway (the production default)")
    storm_timeout: float = _size(120.0, "storm: seconds to wait for every reader to have caught up")
    # The defaults are deploy/systemd/gateway-asgi-held@.service as shipped: a held socket, ASGI_PROCESSES=2.
    storm_socket: str = _size(
        "held",
        "storm: port (the ASGI process binds the port itself and closes it at SIGTERM: reconnects meanwhile are "
        "refused) or held (the bench holds one listening socket, backlog 4096, and hands it to the ASGI process "
        "with --fd, as a systemd socket unit does: reconnects meanwhile wait in its backlog)",
    )
    storm_restart: str = _size(
        "after-exit",
        "storm: after-exit (the new process is started once the old one has exited, as systemctl restart does) or "
        "at-once (right after the SIGTERM, while the old one drains: a held socket allows it) or reload (SIGHUP to "
        "the group's parent, systemctl reload: new processes start beside the old, which stop once they listen)",
    )
    storm_asgi_processes: int = _size(
        2, "storm: ASGI processes sharing one listening socket (gateway.serve --processes), restarted together"
    )
    drain_timeout: float = _size(60.0, "seconds to wait for the last deliveries of a phase")
    scaleout_cores: float = _size(
        0.15,
        "scale-out: each ASGI process is held to this many cores (a cgroup CPU quota), so that they, not the "
        "load generator sharing the machine, are the limit; 0: no limit",
    )
    redis_db: int = _size(0, "Redis database; keys are under a prefix unique to the run either way")
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    targets: list[str] = field(default_factory=lambda: list(TARGETS))  # fan-out and connections: which sides


QUICK = {  # a smoke run of a minute or two: every scenario, small enough for the slowest side
    "subscribers": 100,
    "duration": 1.5,
    "ramp_factor": 2.0,
    "ramp_refine": 0,
    "latency_duration": 1.0,
    "latency_load_high": 20_000,
    "mqtt_messages": 100,
    "mails": 30,
    "idle_connections": 200,
    "idle_processes": 2,
    "idle_budget": 30.0,
    "handshakes": 300,
    "handshake_rounds": 1,
    "storm_clients": 300,
    "storm_processes": 2,
    "storm_before": 1.0,
    "storm_timeout": 60.0,
    "drain_timeout": 30.0,
}


def parse(argv: list[str] | None = None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="make bench BENCH_ARGS=...", description="The gateway against stock Channels."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a run of a minute or two")
    parser.add_argument("--results", default="bench/results", help="where the JSON goes (default: bench/results)")
    for spec in fields(Sizes):
        if spec.name in ("scenarios", "targets"):
            continue
        kind = type(spec.default)
        parser.add_argument(
            f"--{spec.name.replace('_', '-')}",
            type=kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{spec.metadata['help']} (default: {spec.default}; quick: {QUICK.get(spec.name, spec.default)})",
        )
    parser.add_argument("--scenarios", default=None, help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)")
    parser.add_argument(
        "--targets", default=None, help="fan-out and connections against: gateway,baseline (default: both)"
    )
    arguments = parser.parse_args(argv)

    sizes = Sizes()
    if arguments.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0"):
        for name, value in QUICK.items():
            setattr(sizes, name, value)
    for spec in fields(Sizes):
        given = getattr(arguments, spec.name)
        from_env = os.environ.get(f"BENCH_{spec.name.upper()}")
        if given is None and from_env:
            given = from_env
        if given is None:
            continue
        if spec.name in ("scenarios", "targets"):
            known = SCENARIOS if spec.name == "scenarios" else TARGETS
            chosen = [name.strip() for name in str(given).split(",") if name.strip()]
            unknown = set(chosen) - set(known)
            if unknown:
                parser.error(f"unknown {spec.name} {sorted(unknown)}: choose from {','.join(known)}")
            setattr(sizes, spec.name, chosen)
        else:
            setattr(sizes, spec.name, type(getattr(Sizes(), spec.name))(given))
    return sizes, arguments
