"""Storing on PostgreSQL: posts without keys go in one statement, and come out exactly as the general
path stores them (ids, text, data, time), into the same rooms, next to posts stored the general way."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import PYTHON, ROOT, fresh_database, gateway_env, migrate

CHECK = r"""
import json, django
django.setup()
from django.db import connection
from django.utils import timezone
from gateway import rooms
from gateway.models import Message, Room

Room.objects.create(name="both")
posts = [
    rooms._Post("it's a \"quote\" \\ back\nslash", "device", "mqtt", None, None, "d" * 64),
    rooms._Post("temperature: 21.5", "s1", "mqtt", {"temperature": 21.5, "nested": {"a": [1, "x'y"]}}, None, None),
    rooms._Post("ünïcödé ☃ {braces} ,comma", "http-user", "http", None, None, None),
]
statements = []
def counted(execute, sql, params, many, context):
    statements.append(sql)
    return execute(sql, params, many, context)
with connection.execute_wrapper(counted):
    at_once = rooms._store("both", posts)
one_statement = len(statements)
general = rooms._store_in_transaction("both", posts, timezone.now())
keyed = rooms._store("both", [rooms._Post("keyed", "device", "mqtt", None, "mqtt:device:1", None)])
missing = rooms._store_at_once("nowhere", posts, timezone.now())
created = rooms._store("made-on-first-use", posts[:1])
# A broker's redelivery of the first post (its digest): recognised in the transaction, not stored again.
redelivered = rooms._store("both", [posts[0]._replace(redelivered=True)])
print(json.dumps({
    "one_statement": one_statement,
    "at_once": at_once, "general": general, "keyed": keyed, "missing": missing, "created": created,
    "history": rooms._history("both", 0, None, 100),
    "last_id": Room.objects.get(name="both").last_id,
    "redelivered": redelivered,
    "null_data_seqs": list(Message.objects.filter(room__name="both", data__isnull=True).values_list("seq", flat=True)),
}))
"""


@pytest.fixture
def database(postgres_host):
    """A fresh PostgreSQL database (its URL), dropped afterwards."""
    with fresh_database("gw_storage") as url:
        yield url


def test_posts_without_keys_are_stored_in_one_statement_as_the_general_path_stores_them(database):
    env = gateway_env(DATABASE_URL=database, ROOMS_AUTO_CREATE="true")
    migrate(env)
    done = subprocess.run([PYTHON, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["one_statement"] == 1
    at_once = [event for event, new in result["at_once"]]
    general = [event for event, new in result["general"]]
    assert [new for _, new in result["at_once"] + result["general"]] == [True] * 6
    assert [event["id"] for event in at_once + general] == [1, 2, 3, 4, 5, 6]
    strip = lambda event: {key: value for key, value in event.items() if key not in ("id", "ts")}  # noqa: E731
    assert [strip(event) for event in at_once] == [strip(event) for event in general]
    assert at_once[1]["data"] == {"temperature": 21.5, "nested": {"a": [1, "x'y"]}} and "data" not in at_once[0]
    # What the one statement returned is what the database now holds, to the millisecond.
    assert result["history"][:3] == at_once and result["history"][3:6] == general
    assert result["keyed"][0][0]["id"] == 7 and result["history"][6] == result["keyed"][0][0]
    assert sorted(result["null_data_seqs"]) == [1, 3, 4, 6, 7]  # SQL NULL, as the general path stores no data
    assert result["last_id"] == 7  # the redelivery was not stored again:
    [[same, new]] = result["redelivered"]  # the newest post with its digest (the general path's first)
    assert not new and same == general[0] and same["message"] == at_once[0]["message"]
    assert result["missing"] is None  # no such room: the general path decides (creates it here)
    assert result["created"][0][0]["id"] == 1 and result["created"][0][0]["room"] == "made-on-first-use"


@pytest.mark.django_db(transaction=True)
async def test_a_post_is_answered_once_stored_before_its_fan_out_and_batches_reach_readers_in_order(
    monkeypatch, runtime
):
    import asyncio

    rooms = runtime.rooms

    fanned: list[list[int]] = []
    release = asyncio.Event()

    async def slow_fan_out(room: str, events: list[dict]) -> None:
        await release.wait()  # the room's readers are slow to reach
        fanned.append([event["id"] for event in events])

    monkeypatch.setattr(rooms, "_fan_out", slow_fan_out)
    first = await rooms.post("slow-readers", "one", sender="a", source="http")  # answered before its fan-out
    assert first["id"] == 1 and fanned == []
    writer = rooms.writers["slow-readers"]  # still fanning the first one out
    second = asyncio.ensure_future(rooms.post("slow-readers", "two", sender="a", source="http"))
    release.set()
    async with asyncio.timeout(10):
        assert (await second)["id"] == 2
        await writer.task
    assert fanned == [[1], [2]]
