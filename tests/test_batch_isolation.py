"""One bad post costs only itself, on SQLite and PostgreSQL: what the validator refuses never joins a
batch, and a batch the database still refuses is written again in parts, so only the bad post fails
(a 400), every good one is stored once, and the room's readers stay connected."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess

import psycopg
import pytest
import websockets
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from gateway.batches import Batches
from gateway.rooms import blames_one_post
from tests.support import (
    PYTHON,
    ROOT,
    fresh_database,
    gateway_env,
    history,
    migrate,
    prepare_gateway,
    receive,
    start_gateway,
    unique,
)

# The writer called directly with posts crafted past the validator, next to good ones in one batch.
WRITER = r"""
import asyncio, json, django
django.setup()
from gateway import rooms
from gateway.models import Room
from gateway.runtime import Runtime

Room.objects.create(name="iso")
SERVICE = Runtime().rooms  # the process's room service

def post(text, data=None, key=None):
    return rooms._Post(text, "writer", "mqtt", data, key, None)

BAD = {
    3: post("\ud800"),  # a lone surrogate: neither database takes it
    8: post("not json", {"v": float("nan")}),  # NaN: not JSON, refused by both
    9: post("\udfff too"),
}

async def write(keyed):
    writer = SERVICE._writer("iso")
    posts = [BAD.get(n) or post(f"good {keyed} {n}", key=f"k{n}" if keyed else None) for n in range(12)]
    futures = [writer.submit(p) for p in posts]  # handed in at once: one batch
    outcomes = []
    for future in futures:
        try:
            event, new = await future
            outcomes.append(["stored", event["id"], event["message"], new])
        except Exception as exc:
            outcomes.append(["failed", type(exc).__name__, isinstance(exc, rooms.CONTENT_FAILURES)])
    return outcomes

async def main():
    # Without keys (PostgreSQL: the one-statement path), then with keys (the general path).
    return [await write(False), await write(True)]

outcomes = asyncio.run(main())
print(json.dumps({"outcomes": outcomes, "history": rooms._history("iso", 0, None, 100)}))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    request.getfixturevalue("postgres_host")
    with fresh_database("gw_isolation") as url:
        yield url


def test_a_batch_the_database_refuses_is_written_in_parts_so_only_the_bad_posts_fail(database_url):
    env = gateway_env(DATABASE_URL=database_url, ROOMS_AUTO_CREATE="true")
    migrate(env)
    done = subprocess.run([PYTHON, "-c", WRITER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    expected_ids = iter(range(1, 100))
    for keyed, outcomes in enumerate(result["outcomes"]):
        for n, outcome in enumerate(outcomes):
            if n in (3, 8, 9):
                assert outcome[0] == "failed" and outcome[2], outcome  # its own content failure, not the batch's
            else:  # stored once, in the order handed in, with the next id
                assert outcome == ["stored", next(expected_ids), f"good {bool(keyed)} {n}", True]
    good = [f"good {keyed} {n}" for keyed in (False, True) for n in range(12) if n not in (3, 8, 9)]
    assert [event["message"] for event in result["history"]] == good
    assert [event["id"] for event in result["history"]] == list(range(1, len(good) + 1))


# Over real sockets: a gateway whose database refuses one text ("poison") that the validator lets by.
SQLITE_POISON = """CREATE TRIGGER refuse_poison BEFORE INSERT ON gateway_message WHEN NEW.text = 'poison'
    BEGIN SELECT RAISE(ABORT, 'poison refused'); END"""
POSTGRES_POISON = "ALTER TABLE gateway_message ADD CONSTRAINT refuse_poison CHECK (text <> 'poison')"


@pytest.fixture
def poisoned_gateway(database_url, tmp_path, mosquitto):
    gateway = prepare_gateway(tmp_path, mosquitto, DATABASE_URL=database_url)
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            connection.execute(SQLITE_POISON)
    else:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(POSTGRES_POISON)
    start_gateway(gateway)
    yield gateway
    assert gateway.process.stop() == 0, gateway.process.output


async def raw_post(port: int, room: str, body: bytes) -> tuple[int, dict]:
    """One POST on its own connection, so a burst reaches the gateway at once (no client thread pool)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    response = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    head, _, content = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(content)


BAD_BODIES = {
    7: b'{"message": "\\ud800"}',  # valid JSON, not text: the validator refuses it
    30: b'{"message": "poison"}',  # passes the validator, refused by the database
    45: b'{"message": "ok", "sender": "\\udfff"}',
    61: b'{"message": "poison"}',
    80: b'{"message": ' + b"[" * 3000 + b"]" * 3000 + b"}",  # too deep to parse
}


async def test_a_burst_with_bad_posts_stores_every_good_one_once_and_keeps_the_readers(poisoned_gateway):
    gateway, room = poisoned_gateway, unique("burst")
    readers = [(await websockets.connect(gateway.ws(room), open_timeout=10)) for _ in range(2)]
    for reader in readers:
        await receive(reader, "history")
    bodies = [BAD_BODIES.get(n) or json.dumps({"message": f"good {n}"}).encode() for n in range(90)]
    answers = await asyncio.gather(*(raw_post(gateway.http_port, room, body) for body in bodies))
    good = []
    for n, (status, body) in enumerate(answers):
        if n in BAD_BODIES:
            assert status == 400 and body["type"] == "error" and body["error"], (n, status, body)
        else:
            assert status == 201 and body["message"] == f"good {n}", (n, status, body)
            good.append(body["id"])
    assert "the database refused its content" in answers[30][1]["error"]
    stored = await history(gateway, room)
    assert sorted(event["message"] for event in stored) == sorted(f"good {n}" for n in range(90) if n not in BAD_BODIES)
    assert sorted(event["id"] for event in stored) == sorted(good) == list(range(1, len(good) + 1))
    for reader in readers:  # every good one delivered live, and the reader still connected
        seen = [(await receive(reader))["id"] for _ in good]
        assert sorted(seen) == sorted(good)
        await reader.send(json.dumps({"message": "still here"}))
        assert (await receive(reader))["message"] == "still here"
        await reader.close()


@pytest.mark.parametrize(
    "failure", [OperationalError("the database is away"), InterfaceError("closed"), ProgrammingError("no table")]
)
async def test_a_failure_of_the_database_itself_fails_the_batch_once_not_post_by_post(failure):
    writes = []

    async def write(items: list[str]) -> list[str]:
        writes.append(list(items))
        raise failure

    batches = Batches(write, isolate=blames_one_post)
    futures = [batches.submit(item) for item in "abcdefgh"]
    for future in futures:
        with pytest.raises(type(failure)):
            await future
    assert writes == [list("abcdefgh")]


@pytest.mark.parametrize(
    "failure",
    [DataError("value too long"), IntegrityError("check"), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate")],
)
async def test_a_content_failure_is_narrowed_down_to_the_posts_that_fail_alone(failure):
    writes = []

    async def write(items: list[str]) -> list[str]:
        writes.append(list(items))
        if "bad" in items:
            raise failure
        return [item.upper() for item in items]

    then = []
    batches = Batches(write, isolate=blames_one_post, then=lambda results: _record(then, results))
    items = [f"g{n}" for n in range(15)] + ["bad"] + [f"g{n}" for n in range(15, 31)]
    futures = [batches.submit(item) for item in items]
    outcomes = []
    for future in futures:
        try:
            outcomes.append(await future)
        except type(failure):
            outcomes.append("failed")
    assert outcomes == [item.upper() if item != "bad" else "failed" for item in items]
    assert len(writes) <= 2 * 5 + 1  # halves, not one write per item
    assert then == [[item.upper() for item in items if item != "bad"]]  # in order, once, the written ones


async def _record(log: list, results: list) -> None:
    log.append(list(results))


async def test_a_nul_or_control_character_in_a_presence_name_is_shown_replaced(poisoned_gateway):
    """The name comes from the query string; PostgreSQL refused a NUL in it, and with it the others' joins."""
    gateway, room = poisoned_gateway, unique("names")
    odd = await websockets.connect(gateway.ws(room, "?name=a%00b%1B%0Ac"), open_timeout=10)
    bob = await websockets.connect(gateway.ws(room, "?name=bob"), open_timeout=10)
    want = [{"name": "a\ufffdb\ufffd\ufffdc", "count": 1}, {"name": "bob", "count": 1}]
    async with asyncio.timeout(10):
        while (await receive(bob, "presence"))["browsers"] != want:
            pass
    await odd.close()
    await bob.close()
