"""Mail attachments kept and served (docs/email.md, "Attachments").

Kept with Django's storage API (``default_storage``: files under MEDIA_ROOT, or any backend STORAGES
names), one ``Attachment`` row each, linked from their message's ``data.attachments``. Served only to
those who may read the room, as downloads, but for raster images, which are shown inline.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from . import access
from .mail_attachments import MailAttachment
from .models import Attachment, Message, Room
from .rooms import NoSuchRoom
from .runtime import runtime_of

# Shown in the page (``<img>``) and opened in the browser: images no browser runs code from. SVG is not
# one of them: it is a document that can hold scripts.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"})
# Types a browser would render as a page of the gateway's origin: served as bytes, whatever they claim.
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "multipart/x-mixed-replace",
    }
)
# What an attachment's own response may do if it is opened anyway: nothing.
POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def over_limits(attachments: list[MailAttachment], *, count: int, each: int, total: int) -> str | None:
    """Why a mail's attachments are too many or too large (the SMTP answer's text), or None."""
    if len(attachments) > count:
        return f"the mail has {len(attachments)} attachments, more than the {count} a mail may have"
    for attachment in attachments:
        if attachment.size > each:
            return f"the attachment {attachment.name!r} is {attachment.size} bytes, over {each}"
    size = sum(attachment.size for attachment in attachments)
    if size > total:
        return f"the attachments are {size} bytes together, over {total}"
    return None


def write(room: str, attachments: list[MailAttachment]) -> list[Attachment]:
    """Each attachment written to the default storage (blocking, and slow with a remote backend: run it in a
    thread of its own, not the database's), as rows to ``record``. Nothing is left behind when one fails."""
    rows: list[Attachment] = []
    try:
        for attachment in attachments:
            row = Attachment(name=attachment.name, content_type=attachment.content_type, size=attachment.size)
            row.file.save(f"attachments/{room}/{row.id}", ContentFile(attachment.content), save=False)
            rows.append(row)
    except BaseException:
        delete_files(rows)
        raise
    return rows


def record(room: str, rows: list[Attachment]) -> None:
    """The written attachments recorded in ``room``, for a message yet to be posted (their files are deleted
    when that fails). The room is made, or refused, as a post to it would be."""
    try:
        room_row = Room.objects.filter(name=room).first()
        if room_row is None:
            if not settings.ROOMS_AUTO_CREATE:
                raise NoSuchRoom(f"no room {room} here")
            room_row, _ = Room.objects.get_or_create(name=room)
        for row in rows:
            row.room = room_row
        Attachment.objects.bulk_create(rows)
    except BaseException:
        delete_files(rows)
        raise


def delete_files(rows: list[Attachment]) -> None:
    for row in rows:
        row.file.storage.delete(row.file.name)


def described(room: str, rows: list[Attachment]) -> list[dict]:
    """``data.attachments`` of the message: each file's name, type, size and URL (on the gateway's origin)."""
    return [{"name": row.name, "type": row.content_type, "size": row.size, "url": url(room, row)} for row in rows]


def url(room: str, row: Attachment) -> str:
    return f"/api/rooms/{room}/attachments/{row.id}/{quote(row.name, safe='')}"


def link(room: str, seq: int, rows: list[Attachment]) -> None:
    """The attachments belong to the posted message ``seq`` from now on (and are deleted with it)."""
    message = Message.objects.filter(room__name=room, seq=seq).first()
    Attachment.objects.filter(pk__in=[row.pk for row in rows]).update(message=message)


def discard(rows: list[Attachment]) -> None:
    """Attachments whose message was not posted (or was posted before: a resent mail), files and all."""
    Attachment.objects.filter(pk__in=[row.pk for row in rows]).delete()  # each file goes with its row


NOT_FOUND = {"error": "not found"}


@require_safe
async def download(request: HttpRequest, room: str, attachment: UUID, name: str) -> HttpResponse:
    """``GET /api/rooms/<room>/attachments/<id>/<name>``: to whoever may read the room (session or API
    token). A members-only room's attachment is, to an outsider, exactly a missing one: 404."""
    user = await request.auser()
    if not user.is_authenticated:
        user = await access.token_user({b"authorization": request.headers.get("Authorization", "").encode()})
    if await runtime_of(request.scope).verdicts(room, user) is not access.Verdict.OK:
        return JsonResponse(NOT_FOUND, status=404)
    row = await Attachment.objects.filter(pk=attachment, room__name=room).afirst()
    if row is None:
        return JsonResponse(NOT_FOUND, status=404)
    try:
        content = await asyncio.to_thread(_read, row)
    except FileNotFoundError:  # removed from the storage behind the gateway's back
        return JsonResponse(NOT_FOUND, status=404)
    inline = row.content_type in INLINE_TYPES
    content_type = "application/octet-stream" if row.content_type in ACTIVE_TYPES else row.content_type
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(not inline, row.name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = POLICY
    response["Cache-Control"] = "private"
    return response


def _read(row: Attachment) -> bytes:
    with row.file.open("rb") as file:
        return file.read()
