"""Outages: mail sent while the database is unavailable gets 451, and is stored once when the
sending server retries; /healthz says so meanwhile."""

from __future__ import annotations

import smtplib
import time

import psycopg
import pytest

from tests.support import ahttp, asmtp, build_mail, history, launch_gateway, unique

ADMIN = "dbname=test host=127.0.0.1 user=postgres"


@pytest.fixture
def database(postgres_host):
    name = unique("gw_outage").replace("-", "_")
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_available(name: str, available: bool) -> None:
    """Open or shut the database: shut, it refuses new connections and drops the existing ones."""
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(available).lower()}')
        if not available:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def deliver(gateway, room: str, mail: str) -> int:
    """The SMTP verdict on one mail: 250, or the refusal's code (at RCPT or after DATA)."""
    try:
        await asmtp(gateway.smtp_port, "a@example.com", [f"{room}@localhost"], mail)
    except smtplib.SMTPRecipientsRefused as refused:
        return next(iter(refused.recipients.values()))[0]
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code
    return 250


async def test_mail_during_a_database_outage_gets_451_and_is_stored_once_on_retry(tmp_path, database, mosquitto):
    gateway = launch_gateway(tmp_path, mosquitto, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}")
    room = unique()
    mail = build_mail(room, "During the outage", "keep me")  # one Message-ID, as a retrying server sends it
    try:
        set_available(database, False)
        assert await deliver(gateway, room, mail) == 451  # try again later: the sending server keeps the mail
        status, health = await ahttp("GET", f"{gateway.http}/healthz")
        assert status == 503 and health["components"]["database"]["ok"] is False

        set_available(database, True)
        deadline = time.monotonic() + 20
        while (code := await deliver(gateway, room, mail)) != 250:  # the sending server's retries
            assert code == 451 and time.monotonic() < deadline, code
        assert await deliver(gateway, room, mail) == 250  # and once more, as a server that lost our 250 would
        assert [m["message"] for m in await history(gateway, room)] == ["During the outage\n\nkeep me"]
    finally:
        set_available(database, True)
        assert gateway.process.stop() == 0
