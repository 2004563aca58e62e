"""Presence rows on PostgreSQL, where they are written with SQL of their own (arrays, one statement text
whatever the batch): the same rows as on SQLite, in a database of its own, through the real driver."""

from __future__ import annotations

import json
import subprocess

from tests.support import ROOT, gateway_env, manage, migrated_database_fixture

SCRIPT = """
import json
from gateway import presence
from gateway.models import Presence
from gateway.presence import _Change as C

def rows():
    return [list(row) for row in Presence.objects.order_by("channel_name").values_list("channel_name", "room", "name")]

seen = []
presence._write([C("first", "hub.x#1", "alice")])
joined = Presence.objects.get(channel_name="hub.x#1").joined_at
presence._write([C("second", "hub.x#1", "bob"), C("second", "hub.x#2", "carol"), C("second", "hub.x#4", "o'neil")])
seen.append(rows())
seen.append(Presence.objects.get(channel_name="hub.x#1").joined_at == joined)
presence._write([C("second", "hub.x#1", None), C("second", "hub.x#3", "dan"), C("second", "hub.x#3", None)])
seen.append(rows())
presence._write([C("second", "hub.x#2", None), C("second", "hub.x#4", None), C("third", "hub.x#2", "erin")])
seen.append(rows())
seen.append(presence._write_and_read([C("third", "hub.x#5", "erin"), C("fourth", "hub.x#6", "fay")]))
print(json.dumps(seen))
"""


database = migrated_database_fixture("gw_presence")


def test_joins_and_leaves_are_written_on_postgresql_as_on_sqlite(database):
    """A key seen again takes the new room and name and keeps when it first joined; a key's last change
    in a batch counts; a name with a quote is a value, not SQL; the snapshots follow the writes."""
    done = subprocess.run(
        manage("shell", "-c", SCRIPT), cwd=ROOT, env=gateway_env(DATABASE_URL=database), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    renamed, kept_joined_at, after_leaves, came_back, snapshots = json.loads(done.stdout.strip().splitlines()[-1])
    assert renamed == [["hub.x#1", "second", "bob"], ["hub.x#2", "second", "carol"], ["hub.x#4", "second", "o'neil"]]
    assert kept_joined_at is True
    assert after_leaves == [["hub.x#2", "second", "carol"], ["hub.x#4", "second", "o'neil"]]
    assert came_back == [["hub.x#2", "third", "erin"]]
    third, fourth = snapshots
    assert third["room"] == "third" and third["browsers"] == [{"name": "erin", "count": 2}]
    assert fourth["room"] == "fourth" and fourth["browsers"] == [{"name": "fay", "count": 1}]
