"""An ASGI application for tests/test_process_group.py's reloads: tests/held_socket_app.py's (``/pid``
answers with the serving process's id), except that it refuses to load while the file ``RELEASE_BROKEN``
names exists: a broken release on disk, as a reload would find it."""

from __future__ import annotations

import os
from pathlib import Path

if Path(os.environ["RELEASE_BROKEN"]).exists():
    raise RuntimeError("a broken release")

from tests.held_socket_app import application  # after the check: a broken release fails to import

__all__ = ["application"]
