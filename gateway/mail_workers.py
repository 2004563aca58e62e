"""Mail parsing off the event loop, in worker processes, each mail within a time budget.

A thread cannot be stopped, so a mail that parses for too long would keep its thread (and the GIL it
shares with the event loop). Worker processes can be killed: pebble's ``ProcessPool`` kills the worker
whose task is over its timeout and starts another. Workers come from a ``forkserver`` that has imported
``gateway.mail`` (no Django) once, so a replacement is ready in milliseconds and owns none of the
gateway's sockets or threads. One pool per process, made on first use, stopped by ``shutdown()``
(``Adapters.stop``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import TimeoutError
from concurrent.futures.process import BrokenProcessPool

from pebble import ProcessExpired, ProcessPool

from .mail import MailPost, UnreadableMail, mail_to_post

logger = logging.getLogger(__name__)

_pool: ProcessPool | None = None
_lock = threading.Lock()


def default_workers() -> int:
    """Two at least (a mail spending its budget leaves the other free), one per core beyond that."""
    return max(2, os.cpu_count() or 1)


def _ready() -> bool:
    return True


def _started(workers: int) -> ProcessPool:
    global _pool
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["gateway.mail"])
            pool = ProcessPool(max_workers=workers, context=context)
            pool.schedule(_ready).result()  # the forkserver and the workers are up
            _pool = pool
        return _pool


async def parse(content: bytes, envelope_from: str, own_domain: str, *, budget: float, workers: int) -> MailPost:
    """``mail_to_post`` in a worker. ``UnreadableMail`` if it raises, runs over ``budget`` seconds or kills
    its worker: the mail itself is the problem. A pool that cannot run at all raises ``RuntimeError`` or
    ``BrokenProcessPool`` (infrastructure: the sender should retry)."""
    pool = _pool or await asyncio.to_thread(_started, workers)  # starting blocks: not on the loop
    future = pool.schedule(mail_to_post, args=(content, envelope_from, own_domain), timeout=budget)
    try:
        return await asyncio.wrap_future(future)  # cancelling this cancels the task (its worker is stopped)
    except (UnreadableMail, BrokenProcessPool):
        raise
    except TimeoutError:
        raise UnreadableMail(f"the mail took more than {budget:g} s to read") from None
    except ProcessExpired as exc:
        raise UnreadableMail(f"reading the mail stopped its reader ({exc})") from None
    except Exception as exc:  # anything else the parser raised on this mail
        raise UnreadableMail(f"the mail could not be read ({type(exc).__name__})") from None


def shutdown() -> None:
    """Stop the workers (and pending parses): the process is stopping."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.stop()
        pool.join(timeout=5)
