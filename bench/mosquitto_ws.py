"""A Mosquitto with its WebSocket listener, for the bench's second fan-out peer (``mqttws``).

Debian's mosquitto is built without WebSockets (``protocol websockets`` fails with "Unable to start any
listening sockets"), so the bench builds the same version from Debian's own source package with
``WITH_WEBSOCKETS=yes``, once, and keeps it in ``~/.cache/gateway-bench/`` (``BENCH_CACHE`` elsewhere).
Debian's libwebsockets is built without ``LWS_WITH_EXTERNAL_POLL``, which Mosquitto needs to serve
WebSockets from its own event loop (without it every handshake step waits for a loop tick: ~200 ms
a handshake, "Websocket performance will be unusable", says Mosquitto's build), so libwebsockets
is built too, from Debian's source package, with it on, and linked in statically, as Mosquitto's own
release builds do.

    python -m bench.mosquitto_ws        # build it (or say why it cannot), print its path

What it needs: ``apt-get`` (the sources come through it, from a sources list of its own: the machine's
apt configuration is not changed), ``dpkg-source``, ``make``, ``cmake`` and a C compiler. It takes a
minute or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "2.0.11"  # Debian bookworm's
PACKAGES = {"mosquitto": "2.0.11-1.2+deb12u2", "libwebsockets": "4.1.6-3"}
SOURCES = (
    "deb-src http://deb.debian.org/debian bookworm main\n"
    "deb-src http://deb.debian.org/debian-security bookworm-security main\n"
)
BUILD_OPTIONS = [  # the broker only, with WebSockets; nothing the bench does not use
    "WITH_WEBSOCKETS=yes",
    "WITH_TLS=no",
    "WITH_CJSON=no",
    "WITH_DOCS=no",
    "WITH_SRV=no",
    "WITH_SYSTEMD=no",
    "WITH_WRAP=no",
    "WITH_UUID=no",
    "WITH_STATIC_WEBSOCKETS=no",
]
LWS_OPTIONS = [  # a static library, with the external poll Mosquitto drives it through; no TLS (not used)
    "-DLWS_WITH_EXTERNAL_POLL=ON",
    "-DLWS_HAVE_LIBCAP=0",  # not linked into mosquitto (its privileges are its own business)
    "-DLWS_WITH_SSL=OFF",
    "-DLWS_WITH_SHARED=OFF",
    "-DLWS_WITH_STATIC=ON",
    "-DLWS_WITHOUT_TESTAPPS=ON",
    "-DLWS_WITH_MINIMAL_EXAMPLES=OFF",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DCMAKE_BUILD_TYPE=Release",
]


class Unavailable(RuntimeError):
    """The broker cannot be built here; the text says why and what would fix it."""


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "gateway-bench")) / f"mosquitto-ws-{VERSION}"


def binary() -> Path:
    """The broker, built first if it is not in the cache."""
    built = cache_dir() / "mosquitto"
    if built.exists():
        return built
    build(cache_dir())
    return built


def _run(argv: list[str], cwd: Path, log: Path) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise Unavailable(f"{' '.join(argv[:3])} failed ({done.returncode}); the log is {log}:\n{tail}")


def build(target: Path) -> None:
    for tool in ("apt-get", "dpkg-source", "make", "cmake", "cc"):
        if shutil.which(tool) is None:
            raise Unavailable(f"building mosquitto with WebSockets needs {tool}, which is not installed")
    target.mkdir(parents=True, exist_ok=True)
    log = target / "build.log"
    lws = _source(target, "libwebsockets", log)
    prefix = target / "lws"
    _run(
        ["cmake", "-S", str(lws), "-B", str(lws / "build"), f"-DCMAKE_INSTALL_PREFIX={prefix}", *LWS_OPTIONS], lws, log
    )
    _run(["cmake", "--build", str(lws / "build"), f"-j{os.cpu_count() or 1}"], lws, log)
    _run(["cmake", "--install", str(lws / "build")], lws, log)
    tree = _source(target, "mosquitto", log)
    flags = [f"CPPFLAGS=-I{prefix / 'include'}", f"LDFLAGS=-L{prefix / 'lib'}"]
    _run(["make", "-C", "src", f"-j{os.cpu_count() or 1}", *BUILD_OPTIONS, *flags, "mosquitto"], tree, log)
    shutil.copy2(tree / "src" / "mosquitto", target / "mosquitto")


def _source(target: Path, package: str, log: Path) -> Path:
    """Debian's source package, unpacked, through apt-get with a sources list and package lists of the
    bench's own; the source tree."""
    apt = target / "apt"
    if not (apt / "sources.list").exists():
        for folder in (apt / "lists" / "partial", apt / "cache" / "archives" / "partial"):
            folder.mkdir(parents=True, exist_ok=True)
        (apt / "sources.list").write_text(SOURCES)
    options = [
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
    ]  # fmt: skip
    if not any((apt / "lists").glob("*Sources*")):
        _run(["apt-get", *options, "-q", "update"], target, log)
    source = target / f"{package}-source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir()
    _run(["apt-get", *options, "-q", "source", f"{package}={PACKAGES[package]}"], source, log)
    tree = next((path for path in source.iterdir() if path.is_dir()), None)
    if tree is None:
        raise Unavailable(f"apt-get source {package} left no source tree in {source}")
    return tree


if __name__ == "__main__":
    try:
        print(binary())
    except Unavailable as exc:
        sys.exit(f"mosquitto with WebSockets: {exc}")
