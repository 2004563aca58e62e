"""Email for ASGI: the SMTP adapter server, the ``email`` consumer base and the recipient router."""

from .consumer import AsyncEmailConsumer
from .routing import EmailToRouter, address
from .server import SmtpServer

__all__ = ["AsyncEmailConsumer", "EmailToRouter", "SmtpServer", "address"]
