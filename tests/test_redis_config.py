"""Redis for production: Redis Sentinel and several hosts (sharding), end to end with real servers.

First what the settings make of REDIS_URL, REDIS_SENTINELS, REDIS_SENTINEL_MASTER and
REDIS_SENTINEL_PASSWORD; then real servers. Every Redis here is a throwaway ``redis-server`` on a free
port (a sentinel is ``redis-server <conf> --sentinel``), so the machine's Redis is never touched. The
gateway processes are plain daphne, as in production; a message posted over HTTP to one must reach a
WebSocket client of the other, which only the Redis channel layer can carry.

Two expected failures pin what channels-redis 4.3 gets wrong with several hosts (docs/deploy.md,
"Several Redis servers"): they fail today, and will say so (the strict one by failing) once fixed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
import redis
from channels_redis.utils import _consistent_hash

from gateway.topics import out_topic, room_group
from tests.support import (
    PYTHON,
    ROOT,
    Gateway,
    MqttListener,
    Process,
    ahttp,
    free_port,
    gateway_env,
    join,
    manage,
    migrate,
    receive,
    unique,
    wait_for_port,
)
from tests.test_split_processes import stop_all, wait_until_serving


class RedisServer:
    """A ``redis-server`` of this test's own on a free port (``extra`` adds command-line options; a
    ``password`` is required of clients and given to the master when this is a replica)."""

    def __init__(self, directory: Path, *extra: str, password: str | None = None) -> None:
        self.port = free_port()
        self.directory = directory / f"redis-{self.port}"
        self.directory.mkdir()
        self.password = password
        self.extra = [*extra, *(["--requirepass", password, "--masterauth", password] if password else [])]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start(self) -> RedisServer:
        self.log = open(self.directory / "log", "w")  # noqa: SIM115 (closed in stop())
        argv = [*self.command(), "--dir", str(self.directory), *self.extra]
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, lambda: self.process.poll() is None)
        return self

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, db=db, password=self.password, socket_timeout=5, decode_responses=True
        )

    def info(self, section: str) -> dict:
        with self.client() as client:
            return client.info(section)

    def keys(self, prefix: str, db: int = 0) -> list[str]:
        with self.client(db) as client:
            return list(client.scan_iter(match=f"{prefix}*"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Sentinel(RedisServer):
    """A Redis Sentinel watching one master as ``mymaster`` (quorum 1: it alone decides a failover),
    asking its clients for ``password``."""

    def __init__(self, directory: Path, master: RedisServer, password: str, name: str = "mymaster") -> None:
        super().__init__(directory)
        self.name, self.password = name, password
        self.conf = self.directory / "sentinel.conf"  # Sentinel rewrites it: it must be its own file
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\nrequirepass {password}\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
            f"sentinel auth-pass {name} {master.password}\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 10000\n"
        )

    def command(self) -> list[str]:
        return ["redis-server", str(self.conf), "--sentinel"]

    def master_port(self) -> int:
        with self.client() as client:
            return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)[1])

    def known_replicas(self) -> list[int]:
        with self.client() as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.name)
        return [int(r["port"]) for r in replicas if "s_down" not in r["flags"] and "disconnected" not in r["flags"]]


def wait_until(condition, what: str, timeout: float = 30) -> None:
    """Poll ``condition`` (a state of a server we do not get events from) until true, with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s")
        time.sleep(0.05)  # a deadline-bounded poll, not synchronisation by time


def daphnes(env: dict[str, str], count: int = 2, *, healthy: bool = True) -> tuple[list[Gateway], dict[str, Process]]:
    """``count`` daphne processes serving ``config.asgi:application`` on one set of settings, each one
    listening and (``healthy``) answering /healthz with 200: its channel layer answered a send and receive."""
    gateways, processes = [], {}
    for number in range(count):
        gateway = Gateway(free_port(), 0, env.get("MQTT_URL", ""))
        argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(gateway.http_port), "config.asgi:application"]
        processes[f"daphne-{number}"] = Process(argv, env=env).start()
        gateways.append(gateway)
    try:
        for gateway, process in zip(gateways, processes.values(), strict=True):
            process.wait_for("Listening on TCP address")
            if healthy:
                wait_until_serving(gateway, process)
    except AssertionError:
        stop_all(processes)
        raise
    return gateways, processes


def assert_stopped_cleanly(processes: dict[str, Process]) -> None:
    codes = stop_all(processes)
    report = "\n\n".join(f"--- {name} ---\n{process.output}" for name, process in processes.items())
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{report}"


async def crosses(sender: Gateway, reader: Gateway, room: str, text: str) -> dict:
    """Post ``text`` over HTTP to ``sender``; a WebSocket client of ``reader`` must receive it."""
    ws, _ = await join(reader, room)
    try:
        status, posted = await ahttp("POST", f"{sender.http}/api/rooms/{room}/messages", {"message": text})
        assert status == 201, posted
        assert await receive(ws) == posted
    finally:
        await ws.close()
    return posted


# The settings: what each combination of variables makes of CHANNEL_LAYERS


REDIS_VARIABLES = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD")


def load_settings(script: str, **variables: str) -> subprocess.CompletedProcess:
    """Run ``script`` after ``config.settings`` is read with these Redis variables (the others empty), in a
    fresh interpreter: settings are read once per process."""
    env = gateway_env(**{**dict.fromkeys(REDIS_VARIABLES, ""), **variables})
    prelude = "from django.conf import settings; hosts = settings.CHANNEL_LAYERS['default']['CONFIG']['hosts']"
    script = f"{prelude}\n{script}"
    return subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)


# Where a host is and who connects to it; the rest of a host's entry are connection options (timeouts,
# retries), the same for every host whichever way it is named.
ADDRESSING = {"address", "sentinels", "master_name", "sentinel_kwargs", "username", "password", "db", "ssl"}


def channel_layer_hosts(**variables: str) -> list[dict]:
    """CHANNEL_LAYERS' hosts as the settings build them, each checked for its retry on connection errors."""
    result = load_settings(
        "import json\n"
        "for host in hosts:\n"
        "    assert type(host['retry']).__name__ == 'Retry', host\n"
        "    assert 'ConnectionError' in str(host['retry_on_error']), host\n"
        "print(json.dumps(hosts, default=repr))",
        **variables,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def addressing(hosts: list[dict]) -> list[dict]:
    return [{key: value for key, value in host.items() if key in ADDRESSING} for host in hosts]


def options(host: dict) -> dict:
    return {key: value for key, value in host.items() if key not in ADDRESSING and key != "retry"}  # a repr


def settings_error(**variables: str) -> str:
    result = load_settings("", **variables)
    assert result.returncode != 0, f"accepted {variables}"
    return result.stderr.strip().splitlines()[-1]


def test_one_redis_url_is_one_host_as_before():
    hosts = channel_layer_hosts(REDIS_URL="redis://127.0.0.1:6379/0")
    assert addressing(hosts) == [{"address": "redis://127.0.0.1:6379/0"}]


def test_several_redis_urls_are_several_hosts_in_their_order():
    hosts = channel_layer_hosts(REDIS_URL="redis://a:6379/0, rediss://:secret@b:6380/1,")
    assert addressing(hosts) == [{"address": "redis://a:6379/0"}, {"address": "rediss://:secret@b:6380/1"}]
    assert options(hosts[0]) == options(hosts[1])


def test_sentinels_name_the_master_and_redis_url_gives_only_its_credentials():
    hosts = channel_layer_hosts(
        REDIS_SENTINELS="10.0.0.1:26379,10.0.0.2,[fd00::3]:26380",
        REDIS_SENTINEL_PASSWORD="s3cret",
        REDIS_URL="rediss://gateway:pw@mymaster/2",
    )
    assert addressing(hosts) == [
        {
            "sentinels": [["10.0.0.1", 26379], ["10.0.0.2", 26379], ["fd00::3", 26380]],
            "master_name": "mymaster",
            "sentinel_kwargs": {"socket_connect_timeout": 2, "socket_timeout": 2, "password": "s3cret"},
            "username": "gateway",
            "password": "pw",
            "db": 2,
            "ssl": True,
        }
    ]
    # The master gets the connection options (timeouts, retries) a host named by REDIS_URL gets.
    [plain] = channel_layer_hosts(REDIS_URL="redis://127.0.0.1:6379/0")
    assert options(hosts[0]) == options(plain)


def test_several_sentinel_masters_are_several_hosts():
    hosts = channel_layer_hosts(REDIS_SENTINELS="s1:26379", REDIS_SENTINEL_MASTER="shard-a,shard-b")
    assert [host["master_name"] for host in hosts] == ["shard-a", "shard-b"]
    assert all(host["sentinels"] == [["s1", 26379]] and "password" not in host["sentinel_kwargs"] for host in hosts)


def test_bad_redis_settings_are_refused_with_what_is_wrong():
    assert "'s1:port' is not host:port" in settings_error(REDIS_SENTINELS="s1:port")
    assert "REDIS_URL is one URL" in settings_error(REDIS_SENTINELS="s1", REDIS_URL="redis://a/0,redis://b/0")
    assert "redis:// or rediss://" in settings_error(REDIS_SENTINELS="s1", REDIS_URL="unix:///run/redis.sock")


# End to end


@pytest.fixture
def database_env(tmp_path):
    """Settings shared by a test's gateway processes: one SQLite file, this test's key prefix, no broker."""
    env = gateway_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        CHANNEL_LAYER_PREFIX=unique("gwredis"),
        MQTT_URL=f"mqtt://127.0.0.1:{free_port()}",  # nothing there: daphne alone runs no MQTT adapter
        REDIS_URL="",
        REDIS_SENTINELS="",
    )
    migrate(env)
    return env


@pytest.fixture
def servers():
    """Every Redis a test starts, stopped afterwards."""
    started: list[RedisServer] = []
    yield started
    for server in reversed(started):
        server.stop()


@pytest.fixture
def sharded(tmp_path, database_env, servers):
    """Two throwaway Redis servers as the layer's hosts (REDIS_URL lists both), and the settings."""
    first, second = RedisServer(tmp_path).start(), RedisServer(tmp_path).start()
    servers += [first, second]
    return first, second, {**database_env, "REDIS_URL": f"{first.url},{second.url}"}


def rooms_on_each_host(hosts: int = 2) -> dict[int, str]:
    """A room whose group lives on each host (the layer puts a group on the host its name hashes to)."""
    rooms: dict[int, str] = {}
    while len(rooms) < hosts:
        room = unique()
        rooms.setdefault(_consistent_hash(room_group(room), hosts), room)
    return rooms


async def test_two_redis_hosts_are_both_used_and_messages_cross_processes(sharded):
    first, second, env = sharded
    prefix = env["CHANNEL_LAYER_PREFIX"]
    # Not waiting for /healthz: with two hosts it fails half the time (see the test after this one).
    (one, two), processes = daphnes(env, healthy=False)
    try:
        for index, room in sorted(rooms_on_each_host().items()):
            await crosses(one, two, room, f"one to two, host {index}")
            await crosses(two, one, room, f"two to one, host {index}")
        # Sharding happened: each server holds this run's keys (among them the group of the room hashed to it).
        assert first.keys(prefix) and second.keys(prefix), (first.keys(prefix), second.keys(prefix))
    finally:
        assert_stopped_cleanly(processes)


async def test_healthz_with_two_redis_hosts(sharded):
    *_, env = sharded
    (gateway,), processes = daphnes(env, count=1, healthy=False)
    try:
        for _ in range(8):
            status, body = await ahttp("GET", f"{gateway.http}/healthz")
            assert status == 200, body
    finally:
        assert_stopped_cleanly(processes)


async def test_the_out_topic_with_two_redis_hosts(sharded, mosquitto):
    *_, env = sharded
    env = {**env, "MQTT_URL": mosquitto}
    (one, two), processes = daphnes(env, healthy=False)
    processes["runmqtt"] = Process(manage("runmqtt"), env=env).start()
    room = unique()
    listener = MqttListener(mosquitto, out_topic(room))
    try:
        processes["runmqtt"].wait_for("Quit with Ctrl-C.")
        # Each daphne sends its first general-channel message to the first host; the relay, having taken
        # one message there, waits on the second host next.
        for number, gateway in enumerate((one, two), 1):
            status, _ = await ahttp("POST", f"{gateway.http}/api/rooms/{room}/messages", {"message": f"{number}"})
            assert status == 201
            await asyncio.to_thread(listener.wait, number, 10)
    finally:
        listener.close()
        assert_stopped_cleanly(processes)


async def test_redis_sentinel_finds_the_master_and_a_failover(tmp_path, database_env, servers):
    """A master, its replica and a sentinel, each with a password; two daphnes find the master through the
    sentinel, and follow the replica when the sentinel promotes it."""
    master = RedisServer(tmp_path, password="master-secret").start()
    servers.append(master)
    replica = RedisServer(tmp_path, "--replicaof", "127.0.0.1", str(master.port), password="master-secret").start()
    servers.append(replica)
    sentinel = Sentinel(tmp_path, master, password="sentinel-secret").start()
    servers.append(sentinel)
    wait_until(lambda: replica.info("replication")["master_link_status"] == "up", "replication")
    wait_until(lambda: replica.port in sentinel.known_replicas(), "the sentinel knows the replica")

    prefix = database_env["CHANNEL_LAYER_PREFIX"]
    env = {
        **database_env,
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}",
        "REDIS_SENTINEL_MASTER": "mymaster",
        "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        # The master's password and database; its address comes from the sentinel.
        "REDIS_URL": "redis://:master-secret@mymaster/3",
    }
    (one, two), processes = daphnes(env)
    try:
        room = unique()
        before = await crosses(one, two, room, "through the master the sentinel named")
        assert master.keys(prefix, db=3) and not master.keys(prefix, db=0)
        reader, _ = await join(two, room)  # connected across the failover

        # Failover: the master dies, the sentinel promotes the replica, the gateway follows it.
        master.stop()
        wait_until(lambda: sentinel.master_port() == replica.port, "the sentinel promoted the replica")
        after = await crosses(two, one, room, "through the promoted replica")
        assert replica.keys(prefix, db=3)
        # The reader from before the failover hears what came after it, next in line.
        event = await receive(reader, timeout=20)
        assert (event["id"], event) == (before["id"] + 1, after)
        await reader.close()
    finally:
        assert_stopped_cleanly(processes)


def test_redis_selects_the_gateways_layer_and_no_redis_the_in_memory_one():
    script = "print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    on_redis = load_settings(script, REDIS_URL="redis://127.0.0.1:6379/0")
    assert on_redis.stdout.strip() == "fanout.redis_layer.GatewayRedisChannelLayer", on_redis.stderr
    env = gateway_env(**dict.fromkeys(REDIS_VARIABLES, ""))
    alone = subprocess.run(
        [PYTHON, "-c", f"from django.conf import settings; {script}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert alone.stdout.strip() == "channels.layers.InMemoryChannelLayer", alone.stderr
