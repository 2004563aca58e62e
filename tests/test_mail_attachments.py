"""Mail attachments through a running gateway: real SMTP in, stored files, downloads over HTTP with the
room's access rules (docs/email.md, "Attachments")."""

from __future__ import annotations

import contextlib
import smtplib
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.attachment_mails import (
    PDF,
    hostile_names,
    outlook_inline_image,
    png,
    scanner,
    thunderbird_pdf,
    with_files,
)
from tests.members import closed_gateway, request
from tests.support import ROOT, fresh_database, manage, smtp_send, unique

OPEN = "open-room@localhost"
TEAM = "team.s3cr3t@localhost"  # members-only (alice's); its allowlist takes boss@example.com


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request, tmp_path_factory, mosquitto):
    """The closed rooms of ``tests.members`` with low attachment limits, on SQLite and on PostgreSQL."""
    directory = tmp_path_factory.mktemp("attachments")
    with contextlib.ExitStack() as stack:
        database = {}
        if request.param == "postgresql":
            request.getfixturevalue("postgres_host")
            database["DATABASE_URL"] = stack.enter_context(fresh_database("gw_attachments"))
        gateway = closed_gateway(
            directory,
            mosquitto,
            MAIL_SENDER_RATE=100,
            MEDIA_ROOT=directory / "media",
            MAIL_MAX_ATTACHMENTS=3,
            MAIL_MAX_ATTACHMENT_BYTES=40_000,
            MAIL_MAX_ATTACHMENTS_BYTES=60_000,
            **database,
        )
        gateway.media = directory / "media"
        yield gateway
        assert gateway.process.stop() == 0, gateway.process.output[-3000:]


def send(gateway, to: str, mail: str, sender: str = "alice@example.com") -> None:
    assert smtp_send(gateway.smtp_port, sender, [to], mail) == {}


def newest(gateway, room: str, token: str = "alice-token") -> dict:
    status, body = request(gateway, "GET", f"/api/rooms/{room}/messages", Authorization=f"Bearer {token}")
    assert status == 200, body
    return body["messages"][-1]


def download(gateway, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{gateway.http}{url}", headers=headers), timeout=10) as got:
            return got.status, dict(got.headers), got.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def stored_files(gateway) -> set[Path]:
    return {path for path in gateway.media.rglob("*") if path.is_file()}


def test_files_are_stored_linked_and_downloadable(gateway):
    send(gateway, OPEN, thunderbird_pdf(OPEN, image=png()))
    message = newest(gateway, "open-room")
    assert message["message"].startswith("The offer")
    pdf, image = message["data"]["attachments"]
    assert (pdf["name"], pdf["type"], pdf["size"]) == ("Angebot.pdf", "application/pdf", len(PDF))
    assert (image["name"], image["type"], image["size"]) == ("chart.png", "image/png", len(png()))

    status, headers, content = download(gateway, pdf["url"])  # anyone: the room is public
    assert (status, content) == (200, PDF)
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == 'attachment; filename="Angebot.pdf"'
    assert headers["X-Content-Type-Options"] == "nosniff"

    assert request(gateway, "OPTIONS", pdf["url"])[0] == 405  # GET and HEAD only

    status, headers, content = download(gateway, image["url"])
    assert (status, content) == (200, png())
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == 'inline; filename="chart.png"'
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_documents_a_browser_would_run_are_served_as_bytes_to_save(gateway):
    send(gateway, OPEN, hostile_names(OPEN))
    files = {file["name"]: file for file in newest(gateway, "open-room")["data"]["attachments"]}
    assert set(files) == {"_.._etc_passwd", "page.html", "logo.svg"}
    for name in ("page.html", "logo.svg"):
        status, headers, _ = download(gateway, files[name]["url"])
        assert status == 200
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"].startswith("attachment;")
        assert "sandbox" in headers["Content-Security-Policy"]
    assert all(path.resolve().is_relative_to(gateway.media.resolve()) for path in stored_files(gateway))


def test_members_only_attachments_are_missing_to_outsiders(gateway):
    send(gateway, TEAM, thunderbird_pdf(TEAM, sender="boss@example.com"), sender="boss@example.com")
    url = newest(gateway, "team")["data"]["attachments"][0]["url"]
    assert download(gateway, url, Authorization="Bearer alice-token")[::2] == (200, PDF)  # a member

    missing = url.replace(url.split("/")[-2], str(uuid.uuid4()))
    answers = [
        download(gateway, url),  # anonymous
        download(gateway, url, Authorization="Bearer mallory-token"),  # logged in, not a member
        download(gateway, missing, Authorization="Bearer mallory-token"),  # no such attachment
        download(gateway, url.replace("/team/", "/no-such-room/")),  # no such room
    ]
    assert {(status, body) for status, _, body in answers} == {(404, answers[0][2])}
    # Nor under another room's name, even a public one.
    assert download(gateway, url.replace("/team/", "/open-room/"))[0] == 404


def test_an_attachment_only_mail_is_posted(gateway):
    send(gateway, OPEN, scanner(OPEN), sender="scanner@example.com")
    message = newest(gateway, "open-room")
    assert message["message"] == "📎 scan0001.pdf"
    assert download(gateway, message["data"]["attachments"][0]["url"])[2] == PDF


def test_an_inline_cid_image_is_an_image_of_the_message(gateway):
    send(gateway, OPEN, outlook_inline_image(OPEN))
    message = newest(gateway, "open-room")
    assert "All green." in message["message"]
    (image,) = message["data"]["attachments"]
    assert (image["name"], image["type"]) == ("image001.png", "image/png")
    status, headers, content = download(gateway, image["url"])
    assert (status, content, headers["Content-Disposition"]) == (200, png(), 'inline; filename="image001.png"')


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ([("a", b"1"), ("b", b"2"), ("c", b"3"), ("d", b"4")], b"4 attachments, more than the 3"),
        ([("big.bin", b"x" * 40_001)], b"'big.bin' is 40001 bytes, over 40000"),
        ([("a", b"x" * 30_000), ("b", b"y" * 30_001)], b"60001 bytes together, over 60000"),
    ],
    ids=["count", "size", "total"],
)
def test_too_many_or_too_large_files_refuse_the_mail(gateway, files, reason):
    before = newest(gateway, "open-room")["id"]
    files_before = stored_files(gateway)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(gateway, OPEN, with_files(OPEN, files))
    assert refused.value.smtp_code == 552
    assert refused.value.smtp_error.startswith(b"5.3.4 ") and reason in refused.value.smtp_error
    assert newest(gateway, "open-room")["id"] == before  # nothing posted
    assert stored_files(gateway) == files_before  # nothing stored


def test_a_resent_mail_posts_once_and_keeps_one_copy(gateway):
    mail = with_files(OPEN, [("once.txt", b"once")])
    files_before = stored_files(gateway)
    send(gateway, OPEN, mail)
    first = newest(gateway, "open-room")
    send(gateway, OPEN, mail)
    assert newest(gateway, "open-room")["id"] == first["id"]
    assert len(stored_files(gateway) - files_before) == 1


def test_deleting_a_room_deletes_its_files(gateway):
    room = unique("files")
    make = f'from gateway.models import Room; Room.objects.create(name="{room}", public=True, email_open=True)'
    subprocess.run(manage("shell", "-c", make), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    files_before = stored_files(gateway)
    send(gateway, f"{room}@localhost", with_files(f"{room}@localhost", [("gone.txt", b"gone")]))
    (added,) = stored_files(gateway) - files_before
    drop = f'from gateway.models import Room; Room.objects.filter(name="{room}").delete()'
    subprocess.run(manage("shell", "-c", drop), cwd=ROOT, env=gateway.env, check=True, capture_output=True)
    assert not added.exists()
