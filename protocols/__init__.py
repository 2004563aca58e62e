"""ASGI protocol servers, scopes and routers for MQTT and email.

Reusable by any Django/Channels project: ``protocols.mqtt`` and ``protocols.smtp``
each hold a server (the adapter, like daphne is for HTTP), a consumer base class
and a router. The scope formats are specified in ``docs/``.
"""

ASGI_VERSION = {"version": "3.0", "spec_version": "1.0"}
