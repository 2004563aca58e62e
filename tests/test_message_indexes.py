"""Every message stored updates every index of its table: on PostgreSQL the table has only the indexes its
queries use (no LIKE index on the digest, no index on the room alone, which the unique (room, seq) covers),
and the redelivery check still finds a digest through its index."""

from __future__ import annotations

import psycopg

from tests.support import migrated_database_fixture

database = migrated_database_fixture("gw_indexes")


def test_messages_have_only_the_indexes_their_queries_use(database):
    with psycopg.connect(database) as connection:
        rows = connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'gateway_message' ORDER BY indexname"
        ).fetchall()
    columns = {name: definition.split(" USING btree ")[1] for name, definition in rows}
    assert columns == {
        "gateway_message_pkey": "(id)",
        "message_digest": "(digest)",
        "unique_message_id_per_room": "(room_id, seq)",
        "unique_message_key_per_room": "(room_id, key) WHERE (key IS NOT NULL)",
    }


def test_the_redelivery_check_and_room_lookups_use_an_index(database):
    with psycopg.connect(database) as connection:
        connection.execute("SET enable_seqscan = off")  # an empty table: would the planner use an index at all?
        digest_plan = "\n".join(
            row[0]
            for row in connection.execute(
                "EXPLAIN SELECT * FROM gateway_message WHERE digest = ANY(%s)",
                (["ab" * 32],),
            )
        )
        room_plan = "\n".join(
            row[0] for row in connection.execute("EXPLAIN DELETE FROM gateway_message WHERE room_id = 1")
        )
    assert "message_digest" in digest_plan
    assert "unique_message_id_per_room" in room_plan
