"""The SMTP adapter server: aiosmtpd on the running event loop, serving an ASGI ``email`` application.

Recipients are checked against the application's ``EmailToRouter`` at RCPT time
(550 when nothing routes them; too many refusals, in a session or from one address, end the session
with 421). After DATA, one application instance per recipient gets the raw message; the SMTP reply
waits for their answers. Stopping, it takes no new sessions, answers the mails being delivered, and
says 421 to every session (a sending server tries again later). See docs/email.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from .. import ASGI_VERSION
from ..routing import find_router
from ..server import ProtocolServer
from .probes import RefusedRecipients
from .routing import EmailToRouter

logger = logging.getLogger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
TOO_MANY_REFUSED_HERE = "421 4.7.0 Too many refused recipients in this session, closing"
TOO_MANY_REFUSED_FROM_YOU = "421 4.7.0 Too many refused recipients from your address, try again later"
SHUTTING_DOWN = b"421 4.3.2 Shutting down, try again later\r\n"


def combine(replies: list[str]) -> str:
    """One SMTP reply for several recipients: success if all succeeded; a temporary failure
    if any was temporary (the sender retries); otherwise the first permanent failure, unless
    some recipients were served (then 250: SMTP has one reply after DATA, LMTP would be needed).
    """
    failures = [reply for reply in replies if not reply.startswith("2")]
    if not failures:
        return replies[0]
    temporary = [reply for reply in failures if reply.startswith("4")]
    if temporary:
        return temporary[0]
    if len(failures) < len(replies):
        logger.warning("Mail accepted for some recipients, refused for %d others", len(failures))
        return next(reply for reply in replies if reply.startswith("2"))
    return failures[0]


class AsgiHandler:
    """aiosmtpd handler hooks that hand each mail to the ASGI application."""

    def __init__(
        self,
        application: Any,
        router: EmailToRouter | None,
        application_timeout: float,
        max_recipients: int = 100,
        *,
        max_refused_recipients: int = 10,
        refused_recipients: RefusedRecipients | None = None,
    ) -> None:
        self.application = application
        self.router = router
        self.application_timeout = application_timeout
        self.max_recipients = max_recipients
        self.max_refused_recipients = max_refused_recipients  # in one session
        self.refused_recipients = refused_recipients or RefusedRecipients(0, 1)  # per client address

    async def handle_RCPT(
        self, server: _CountedSMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list
    ) -> str:
        # Past either limit every recipient gets the same 421, a real one too: probing learns nothing more.
        client = _client(session)
        if server.refused_recipients >= self.max_refused_recipients:
            return TOO_MANY_REFUSED_HERE
        if self.refused_recipients.exhausted(client):
            return TOO_MANY_REFUSED_FROM_YOU
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.max_recipients} a mail)"
        if self.router is not None:
            try:
                refusal = await self.router.refusal(self.scope_for(session, envelope, address))
            except Exception:  # e.g. the database is down: the sender should try again, not bounce
                logger.exception("Recipient check failed")
                return TEMPORARY_FAILURE
            if refusal is not None:
                server.refused_recipients += 1
                self.refused_recipients.refused(client)
                return refusal
        same = self.router.normalize if self.router is not None else str
        if all(same(address) != same(known) for known in envelope.rcpt_tos):  # the same recipient is served once
            envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: _CountedSMTP, session: Session, envelope: Envelope) -> str:
        server.delivering = True  # a stopping server lets the session have this reply
        try:
            replies = await asyncio.gather(*(self.deliver(session, envelope, rcpt) for rcpt in envelope.rcpt_tos))
        finally:
            server.delivering = False
        return combine(list(replies))

    def scope_for(self, session: Session, envelope: Envelope, rcpt_to: str) -> dict:
        return {
            "type": "email",
            "asgi": ASGI_VERSION,
            "mail_from": envelope.mail_from,
            "rcpt_to": rcpt_to,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": list(session.peer[:2]) if isinstance(session.peer, tuple) else [session.peer, 0],
            "helo": session.host_name,
        }

    async def deliver(self, session: Session, envelope: Envelope, rcpt_to: str) -> str:
        """Run one application instance; its answer as an SMTP reply line."""
        reply: str | None = None

        async def send(event: dict) -> None:
            nonlocal reply
            if reply is not None:
                return
            if event["type"] == "email.accept":
                reply = "250 2.0.0 OK: delivered"
            elif event["type"] == "email.reject":
                code = int(event.get("code", 550))
                if not 400 <= code < 600:
                    raise ValueError(f"email.reject code must be 4xx or 5xx, not {code}")
                reason = " ".join(str(event.get("reason", "rejected")).split())  # one line, no CR/LF
                reply = f"{code} {reason}"
            else:
                raise ValueError(f"Unknown event type for email scope: {event['type']!r}")

        events: asyncio.Queue = asyncio.Queue()
        events.put_nowait({"type": "email.receive", "content": envelope.original_content})
        try:
            await asyncio.wait_for(
                self.application(self.scope_for(session, envelope, rcpt_to), events.get, send),
                self.application_timeout,
            )
        except Exception:
            logger.exception("Email application failed for %s", rcpt_to)
        if reply is None:
            return TEMPORARY_FAILURE
        return reply


def _client(session: Session) -> str:
    """The client's IP address, what the refused recipients are counted by across sessions."""
    return str(session.peer[0] if isinstance(session.peer, tuple) else session.peer)


class SmtpServer(ProtocolServer):
    """Listen for SMTP on ``host:port`` on the running event loop."""

    def __init__(
        self,
        application: Any,
        host: str = "127.0.0.1",
        port: int = 2525,
        *,
        hostname: str | None = None,
        data_size_limit: int = 1024 * 1024,
        application_timeout: float = 30.0,
        idle_timeout: float = 300.0,
        session_timeout: float | None = None,
        max_recipients: int = 100,
        max_sessions: int = 1000,
        max_refused_recipients: int = 10,
        refused_recipient_rate: float = 0.0,
        refused_recipient_burst: int = 20,
        drain_timeout: float = 10.0,
    ) -> None:
        self.application = application
        self.host, self.port = host, port
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.idle_timeout = idle_timeout
        # aiosmtpd's idle timeout starts again with every byte: a client trickling a mail would be kept for
        # days. A session lasts at most this long, whatever it sends (None: no limit).
        self.session_timeout = session_timeout
        router = find_router(application, "email", EmailToRouter)
        self.handler = AsgiHandler(
            application,
            router,
            application_timeout,
            max_recipients,
            max_refused_recipients=max_refused_recipients,
            refused_recipients=RefusedRecipients(refused_recipient_rate, refused_recipient_burst),
        )
        self.max_sessions = max_sessions
        self.sessions = 0
        self.drain_timeout = drain_timeout  # stopping: how long the mails being delivered may take
        self.stopping = False
        self.open_sessions: set[_CountedSMTP] = set()
        self._all_closed = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> SMTP:
        return _CountedSMTP(
            self,
            self.handler,
            hostname=self.hostname,
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=self.idle_timeout,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for

    async def stop(self) -> None:
        """Take no new sessions; let the mails being delivered have their answer; then 421 to every
        session, and close it (a sending server keeps its mail and tries again later). Sessions still
        open after ``drain_timeout`` are closed."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for session in list(self.open_sessions):
            if not session.delivering:
                session.shut()  # a mail being delivered: shut after its reply (``push``)
        if self.open_sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), self.drain_timeout)
        for session in list(self.open_sessions):
            session.shut()

    def session_ended(self, session: _CountedSMTP) -> None:
        self.sessions -= 1
        self.open_sessions.discard(session)
        if self.stopping and not self.open_sessions:
            self._all_closed.set()

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()


class _CountedSMTP(SMTP):
    """An SMTP session that counts itself, says 421 when the server has too many, and 421 when it has
    lasted ``session_timeout``; it counts its refused recipients too. Any 421 reply closes it (RFC 5321,
    3.8: the server closes the channel)."""

    def __init__(self, server: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server, self._counted = server, False
        self.session_deadline: asyncio.TimerHandle | None = None
        self.refused_recipients = 0
        self.delivering = False  # between DATA's end and its reply

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        if status[:3] in ("421", b"421") and self.transport is not None:
            self.transport.close()
        elif self._server.stopping and not self.delivering:
            self.shut()

    def shut(self) -> None:
        """The server is stopping: 421, and the session is closed."""
        if self.transport is not None and not self.transport.is_closing():
            cast(asyncio.WriteTransport, self.transport).write(SHUTTING_DOWN)
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._server.sessions >= self._server.max_sessions:
            cast(asyncio.WriteTransport, transport).write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._server.sessions += 1
        self._server.open_sessions.add(self)
        self._counted = True
        super().connection_made(transport)
        if self._server.session_timeout:
            self.session_deadline = asyncio.get_running_loop().call_later(
                self._server.session_timeout, self.end_long_session, transport
            )

    def end_long_session(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(b"421 4.4.2 Session lasted too long, closing\r\n")
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._server.session_ended(self)
            if self.session_deadline is not None:
                self.session_deadline.cancel()
            super().connection_lost(exc)
