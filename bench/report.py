"""The results as a table (scenario | metric | gateway | baseline | ratio | target | met?) and as JSON."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import Sizes
from .servers import ROOT

MISSING = "-"


@dataclass
class Row:
    scenario: str
    metric: str
    gateway: Any = None
    baseline: Any = None
    target: tuple[str, float] | None = None  # ("<=", 25.0)
    unit: str = ""
    digits: int = 0
    check: bool = False  # a yes/no check (its target is "zero loss")

    @property
    def ratio(self) -> float | None:
        numbers = [value for value in (self.gateway, self.baseline) if isinstance(value, int | float)]
        if len(numbers) == 2 and not any(isinstance(value, bool) for value in numbers) and self.baseline:
            return self.gateway / self.baseline
        return None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.check or isinstance(self.gateway, bool):
            return self.gateway is True
        if not isinstance(self.gateway, int | float):
            return False  # no figure (an error, or loss): not met
        operator, value = self.target
        return self.gateway <= value if operator == "<=" else self.gateway >= value

    def cells(self) -> list[str]:
        target = MISSING
        if self.target is not None:
            operator, value = self.target
            symbol = "≤" if operator == "<=" else "≥"
            target = "zero loss" if self.check else f"{symbol} {self._number(value)}"
        met = {None: "", True: "yes", False: "NO"}[self.met]
        ratio = MISSING if self.ratio is None else f"{self.ratio:.2f}×"
        return [self.scenario, self.metric, self._cell(self.gateway), self._cell(self.baseline), ratio, target, met]

    def _cell(self, value: Any) -> str:
        if value is None:
            return MISSING
        if isinstance(value, bool):
            return "yes" if value else "NO"
        if isinstance(value, int | float):
            return self._number(value)
        return str(value)

    def _number(self, value: float) -> str:
        text = f"{value:,.{self.digits}f}"
        return f"{text} {self.unit}".rstrip()


def _get(data: dict, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _lossless(data: dict, *path: str) -> bool | None:
    return _get(data, *path, "check", "lossless")


def _error(value: Any) -> str | None:
    return f"error: {value['error']}" if isinstance(value, dict) and "error" in value else None


def rows(results: dict, sizes: Sizes) -> list[Row]:
    """The table's rows for whatever scenarios ran."""
    table: list[Row] = []
    if "fanout" in results:
        gw, base = results["fanout"].get("gateway", {}), results["fanout"].get("baseline", {})
        name = f"fan-out {sizes.subscribers} subs"
        table += [
            Row(name, "server CPU per delivery", _get(gw, "sustained", "cpu_us_per_delivery"),
                _get(base, "sustained", "cpu_us_per_delivery"), ("<=", 25), "µs", 1),
            Row(name, "deliveries/s sustained, zero loss", _get(gw, "sustained", "deliveries_per_s"),
                _get(base, "sustained", "deliveries_per_s"), (">=", 40_000), "/s"),
            Row(name, "  every message once, in order", _get(gw, "sustained", "lossless"),
                _get(base, "sustained", "lossless"), ("==", 1), check=True),
            Row(name, "  deliveries missing, first failed step", _missing(gw), _missing(base)),
            Row(name, "  messages refused (HTTP errors), all steps", _refused(gw), _refused(base)),
            Row(name, "  server cores used at that rate", _get(gw, "sustained", "server_cores"),
                _get(base, "sustained", "server_cores"), None, "", 2),
            Row(name, f"p99 latency @ {sizes.latency_load:,} deliveries/s", _get(gw, "fixed_load", "latency_ms", "p99"),
                _get(base, "fixed_load", "latency_ms", "p99"), ("<=", 50), "ms", 1),
            Row(name, "  p50 latency", _get(gw, "fixed_load", "latency_ms", "p50"),
                _get(base, "fixed_load", "latency_ms", "p50"), None, "ms", 1),
            Row(name, "  every message once, in order", _lossless(gw, "fixed_load"), _lossless(base, "fixed_load"),
                ("==", 1), check=True),
            Row(name, f"p99 latency @ {sizes.latency_load_high:,} deliveries/s (gateway)",
                _get(gw, "fixed_load_high", "latency_ms", "p99"), None, ("<=", 20), "ms", 1),
            Row(name, "  p50 latency", _get(gw, "fixed_load_high", "latency_ms", "p50"), None, None, "ms", 1),
            Row(name, "  server cores used", _get(gw, "fixed_load_high", "server_cores"), None, None, "", 2),
            Row(name, "  every message once, in order", _lossless(gw, "fixed_load_high"), None, ("==", 1), check=True),
            Row(name, "joining: connect + settle", _sum(_get(gw, "join_s"), _get(gw, "join_settle_s")),
                _sum(_get(base, "join_s"), _get(base, "join_settle_s")), None, "s", 1),
        ]  # fmt: skip
        for side, data in (("gateway", gw), ("baseline", base)):
            if _error(data):
                table.append(Row(name, f"{side} failed", "see warnings"))
    if "ingest" in results:
        data = results["ingest"]
        table += [
            Row("ingest", "MQTT QoS 1 stored+delivered", _get(data, "mqtt", "per_s"), None, (">=", 3000), "msg/s"),
            Row("ingest", "  every message stored and delivered once", _lossless(data, "mqtt"), None, ("==", 1),
                check=True),
            Row("ingest", "  MQTT server CPU per message", _get(data, "mqtt", "server_cpu_us_per_message"), None,
                None, "µs"),
            Row("ingest", "  broker + publisher CPU per message", _sum(_get(data, "mqtt", "broker_cpu_us_per_message"),
                _get(data, "mqtt", "publisher_cpu_us_per_message")), None, None, "µs"),
            Row("ingest", f"MQTT, {sizes.mqtt_adapters} runmqtt in a shared group", _get(data, "mqtt_shared", "per_s"),
                None, None, "msg/s"),
            Row("ingest", "  every message stored and delivered once", _lossless(data, "mqtt_shared"), None, ("==", 1),
                check=True),
            Row("ingest", "  MQTT server CPU per message", _get(data, "mqtt_shared", "server_cpu_us_per_message"),
                None, None, "µs"),
            Row("ingest", f"mail ({sizes.smtp_sessions} sessions) stored+delivered", _get(data, "email", "per_s"),
                None, (">=", 200), "mail/s", 1),
            Row("ingest", "  every mail stored and delivered once", _lossless(data, "email"), None, ("==", 1),
                check=True),
        ]  # fmt: skip
        if _error(data):
            table.append(Row("ingest", "failed", "see warnings"))
    if "connections" in results:
        gw, base = results["connections"].get("gateway", {}), results["connections"].get("baseline", {})
        name = f"{sizes.idle_connections:,} idle WebSockets"
        table += [
            Row(name, "RSS per connection", _get(gw, "kb_per_connection"), _get(base, "kb_per_connection"),
                ("<=", 10), "KB", 1),
            Row(name, "  connections held", _get(gw, "held"), _get(base, "held"), (">=", sizes.idle_connections)),
            Row(name, "  handshakes/s while connecting", _get(gw, "handshakes_per_s"), _get(base, "handshakes_per_s")),
            Row(name, "  server CPU while they idle", _get(gw, "idle_cores"), _get(base, "idle_cores"), None,
                "cores", 3),
        ]  # fmt: skip
        for side, data in (("gateway", gw), ("baseline", base)):
            if _error(data):
                table.append(Row(name, f"{side} failed", "see warnings"))
    if "handshakes" in results:
        data = results["handshakes"]
        name = "WebSocket handshakes"

        def cpu(target: str) -> float | None:
            return _get(data, target, "cpu_ms_per_handshake")

        def rate(target: str) -> float | None:
            return _get(data, target, "handshakes_per_s")

        table += [
            Row(name, "server CPU per handshake (join, history)", cpu("gateway"), cpu("baseline"), None, "ms", 3),
            Row(name, "  handshakes/s (the clients may be the limit)", rate("gateway"), rate("baseline")),
            Row(name, "  trivial app, the gateway's daphne", cpu("trivial-gateway-daphne"), None, None, "ms", 3),
            Row(name, "  trivial app, plain daphne", cpu("trivial-daphne"), None, None, "ms", 3),
            Row(name, "  trivial app, uvicorn", cpu("trivial-uvicorn"), None, None, "ms", 3),
            Row(name, "  gateway ÷ trivial app under daphne", _get(data, "gateway_over_trivial_daphne"), None,
                ("<=", 1.2), "×", 2),
            Row(name, "  gateway ÷ trivial app, the gateway's daphne", _get(data, "gateway_over_trivial_own_daphne"),
                None, None, "×", 2),
        ]  # fmt: skip
        if _error(data) or any(_error(value) for value in data.values()):
            table.append(Row(name, "failed", "see warnings"))
    if "mqttws" in results:
        data, gateway = results["mqttws"], results.get("fanout", {}).get("gateway", {})
        name = "vs Mosquitto WebSocket"
        hs = results.get("handshakes", {}).get("gateway", {})
        table += [
            Row(name, "server CPU per delivery (baseline column: Mosquitto)",
                _get(gateway, "sustained", "cpu_us_per_delivery"),
                _get(data, "fanout", "sustained", "cpu_us_per_delivery"), None, "µs", 1),
            Row(name, "  deliveries/s sustained, zero loss", _get(gateway, "sustained", "deliveries_per_s"),
                _get(data, "fanout", "sustained", "deliveries_per_s"), None, "/s"),
            Row(name, "  every message once, in order", _get(gateway, "sustained", "lossless"),
                _get(data, "fanout", "sustained", "lossless")),
            Row(name, "  p99 latency at the fixed load", _get(gateway, "fixed_load", "latency_ms", "p99"),
                _get(data, "fanout", "fixed_load", "latency_ms", "p99"), None, "ms", 1),
            Row(name, "server CPU per handshake (Mosquitto: CONNECT, SUBSCRIBE)", _get(hs, "cpu_ms_per_handshake"),
                _get(data, "handshakes", "cpu_ms_per_handshake"), None, "ms", 3),
            Row(name, "  handshakes/s", _get(hs, "handshakes_per_s"), _get(data, "handshakes", "handshakes_per_s")),
        ]  # fmt: skip
        if _error(data):
            table.append(Row(name, "failed", "see warnings"))
    if "storm" in results:
        data = results["storm"]
        name = f"storm {sizes.storm_clients:,} readers"
        table += [
            Row(name, f"listening again → everyone caught up ({_get(data, 'socket')} socket, "
                f"{_get(data, 'restart')}, {_get(data, 'asgi_processes')} process(es))",
                _get(data, "caught_up_s"), None, ("<=", 5), "s", 2),
            Row(name, "  every message once, in order", _get(data, "check", "lossless"), None, ("==", 1), check=True),
            Row(name, "  the new process's ready line → everyone caught up", _get(data, "caught_up_from_ready_s"),
                None, None, "s", 2),
            Row(name, "  SIGTERM → everyone caught up", _get(data, "caught_up_from_sigterm_s"), None, None, "s", 2),
            Row(name, "  SIGTERM → the old process exited", _get(data, "stop_s"), None, None, "s", 1),
            Row(name, "  SIGTERM → the new process's ready line", _get(data, "restart_to_ready_s"), None, None, "s", 1),
            Row(name, "  SIGTERM → the new process listens", _get(data, "restart_to_listen_s"), None, None, "s", 1),
            Row(name, "  SIGTERM → its /healthz answers", _get(data, "restart_to_answer_s"), None, None, "s", 1),
            Row(name, "  server CPU, its start → everyone caught up", _get(data, "server_cpu_s"), None, None, "s", 1),
            Row(name, "  last reconnect attempt after it listened", _get(data, "last_attempt_after_listening_s"),
                None, None, "s", 2),
            Row(name, "  attempt → history frame, p99", _get(data, "history_wait_ms", "p99"), None, None, "ms", 1),
            Row(name, "  reconnect attempts / failed", _pair(_get(data, "check", "attempts"),
                _get(data, "check", "failed_attempts"))),
            Row(name, "  messages missing / twice", _pair(_get(data, "check", "missing"),
                _get(data, "check", "duplicates"))),
        ]  # fmt: skip
        if _error(data):
            table.append(Row(name, "failed", "see warnings"))
    if "scaleout" in results:
        data = results["scaleout"]
        one = _get(data, "one_process", "sustained", "deliveries_per_s")
        two = _get(data, "two_processes", "sustained", "deliveries_per_s")
        cores = _get(data, "cores_each")
        each = f" (≤ {cores:g} cores each)" if cores else " (no CPU limit)"
        table += [
            Row("scale-out", "deliveries/s, 1 ASGI process" + each, one, None, None, "/s"),
            Row("scale-out", "deliveries/s, 2 ASGI processes", two, None, None, "/s"),
            Row("scale-out", "  2 processes ÷ 1", two / one if one and two else None, None, (">=", 1.6), "×", 2),
        ]
        if _error(data) or any(_error(_get(data, side)) for side in ("one_process", "two_processes")):
            table.append(Row("scale-out", "failed", "see warnings"))
    return table


def _pair(first: int | None, second: int | None) -> str | None:
    return None if first is None or second is None else f"{first} / {second}"


def _refused(data: dict) -> int | None:
    steps, fixed = _get(data, "sustained", "refused"), _get(data, "fixed_load", "check", "refused")
    return None if steps is None else steps + (fixed or 0)


def _missing(data: dict) -> int | None:
    return _get(data, "sustained", "first_failure", "check", "missing")


def _sum(*values: float | None) -> float | None:
    return None if any(value is None for value in values) else sum(values)  # type: ignore[arg-type]


def render(table: list[Row]) -> str:
    header = ["scenario", "metric", "gateway", "baseline", "ratio", "target", "met?"]
    lines = [header] + [row.cells() for row in table]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    right = {2, 3, 4}

    def format_line(line: list[str]) -> str:
        cells = [
            cell.rjust(width) if n in right else cell.ljust(width)
            for n, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([format_line(header), rule, *(format_line(line) for line in lines[1:])])


def environment() -> dict:
    def version(module: str) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(module)
        except PackageNotFoundError:
            return "?"

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "?", None
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": commit,
        "dirty_tree": dirty,
        "packages": {
            name: version(name) for name in ("django", "channels", "channels-redis", "daphne", "redis", "psutil")
        },
    }


def write_json(
    path: Path, sizes: Sizes, results: dict, table: list[Row], warnings: list[str], started: str, completed: bool
) -> None:
    document = {
        "started": started,
        "completed": completed,  # false: interrupted, or a scenario failed
        "sizes": asdict(sizes),
        "environment": environment(),
        "results": results,
        "table": [{**asdict(row), "ratio": row.ratio, "met": row.met} for row in table],
        "warnings": warnings,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
