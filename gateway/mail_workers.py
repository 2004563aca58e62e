"""Mail parsing off the event loop, in worker processes, each mail within a time budget.

A thread cannot be stopped, so a mail that parses for too long would keep its thread (and the GIL it
shares with the event loop). Worker processes can be killed: pebble's ``ProcessPool`` kills the worker
whose task is over its timeout and starts another. Workers come from a ``forkserver`` that has imported
``gateway.mail`` (no Django) once, so a replacement is ready in milliseconds and owns none of the
gateway's sockets or threads. One pool per process (``MailReaders``, the runtime's ``mail_readers``),
made on first use, stopped by ``shutdown()`` when the runtime closes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import TimeoutError
from concurrent.futures.process import BrokenProcessPool

from pebble import ProcessExpired, ProcessPool

from .mail import MailPost, UnreadableMail, mail_to_post


class OverBudget(UnreadableMail):
    """The mail took longer than its budget to read."""


def _ready() -> bool:
    return True


class MailReaders:
    """A process's mail-reading worker processes and the mails being read now."""

    def __init__(self) -> None:
        self._pool: ProcessPool | None = None
        self._reading: dict[tuple[bytes, str, str], asyncio.Future] = {}  # mails being read now
        self._lock = threading.Lock()

    def _started(self, workers: int) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["gateway.mail"])
                pool = ProcessPool(max_workers=workers, context=context)
                try:
                    pool.schedule(_ready).result()  # the forkserver and the workers are up
                except BaseException:
                    pool.stop()  # its threads too
                    raise
                self._pool = pool
            return self._pool

    async def parse(
        self, content: bytes, envelope_from: str, own_domain: str, *, budget: float, workers: int
    ) -> MailPost:
        """``mail_to_post`` in a worker, once for a mail however many of its recipients ask at the same time
        (a slow mail to twenty rooms spends one budget, not twenty)."""
        key = (content, envelope_from, own_domain)  # the recipients share one bytes object: its hash is cached
        reading = self._reading.get(key)
        if reading is None:
            parsing = self._parse(content, envelope_from, own_domain, budget, workers)
            reading = self._reading[key] = asyncio.ensure_future(parsing)
            reading.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(reading)  # one recipient's instance cancelled leaves the others theirs

    def _forget(self, key: tuple, done: asyncio.Future) -> None:
        del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved, even when every recipient's instance was cancelled meanwhile

    async def _parse(
        self, content: bytes, envelope_from: str, own_domain: str, budget: float, workers: int
    ) -> MailPost:
        """``mail_to_post`` in a worker. ``UnreadableMail`` if it raises, runs over ``budget`` seconds
        (``OverBudget``) or kills its worker: the mail itself is the problem. A pool that cannot run raises
        ``RuntimeError`` or ``BrokenProcessPool`` (infrastructure: the sender should retry) and is replaced
        by the next mail."""
        pool = self._pool or await asyncio.to_thread(self._started, workers)  # starting blocks: not on the loop
        try:
            future = pool.schedule(mail_to_post, args=(content, envelope_from, own_domain), timeout=budget)
        except RuntimeError:  # the pool is stopped or broken
            await asyncio.to_thread(self._discard, pool)
            raise
        try:
            return await asyncio.wrap_future(future)  # cancelling this cancels the task (its worker is stopped)
        except UnreadableMail:
            raise
        except BrokenProcessPool:
            await asyncio.to_thread(self._discard, pool)
            raise
        except TimeoutError:
            raise OverBudget(f"the mail took more than {budget:g} s to read") from None
        except ProcessExpired as exc:
            raise UnreadableMail(f"reading the mail stopped its reader ({exc})") from None
        except Exception as exc:  # anything else the parser raised on this mail
            raise UnreadableMail(f"the mail could not be read ({type(exc).__name__})") from None

    def health(self) -> tuple[bool, str]:
        """For ``/healthz``: whether the workers can read mail."""
        pool = self._pool
        if pool is None:
            return True, "not started (the first mail starts them)"
        return (True, "running") if pool.active else (False, "stopped")

    def _discard(self, pool: ProcessPool) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.stop()
        pool.join(timeout=5)

    def shutdown(self) -> None:
        """Stop the workers (and pending parses): the process is stopping."""
        pool = self._pool
        if pool is not None:
            self._discard(pool)
