import asyncio
import logging
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run everything in one process: HTTP and WebSocket (daphne), the SMTP adapter and the MQTT adapter."

    def handle(self, *args, **options) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from gateway.server import GatewayServer  # isort: skip  # installs Twisted's asyncio reactor first
        from twisted.internet import defer, reactor

        from config.asgi import build_application
        from gateway.adapters import Adapters
        from gateway.runtime import Runtime

        runtime = Runtime()
        application = build_application(runtime)
        adapters = Adapters(application, runtime, embedded_broker=True)
        failed = []

        async def start() -> None:
            try:
                await adapters.start()
            except Exception as exc:
                failed.append(exc)
                logger.critical("Could not start the adapters: %s", exc)
                reactor.stop()
                return
            host = settings.BIND
            lines = [
                "Gateway running:",
                f"  Chat       http://{host}:{settings.HTTP_PORT}/chat/",
                f"  WebSocket  ws://{host}:{settings.HTTP_PORT}/ws/chat/<room>/",
                f"  HTTP API   http://{host}:{settings.HTTP_PORT}/api/rooms/   health: /healthz",
                *adapters.banner(),
                "Quit with Ctrl-C.",
            ]
            print("\n".join(lines), flush=True)

        def ready() -> None:
            reactor.addSystemEventTrigger("before", "shutdown", stop)
            asyncio.get_event_loop().create_task(start())

        async def drain() -> None:
            """Stop the adapters and answer the HTTP requests read (the server's drain), then cancel the
            application instances and let them finish before the loop stops: coroutines left suspended
            crash CPython 3.11's finalisation (a segfault at exit), then close the runtime."""
            await asyncio.gather(adapters.stop(), server.drain())
            instances = [c["application_instance"] for c in server.connections.values() if "application_instance" in c]
            for instance in instances:
                instance.cancel()
            if instances:
                await asyncio.wait(instances, timeout=5)
            await runtime.close()

        def stop() -> defer.Deferred:
            return defer.Deferred.fromFuture(asyncio.ensure_future(drain()))

        server = GatewayServer(
            application=application,
            endpoints=build_endpoint_description_strings(host=settings.BIND, port=settings.HTTP_PORT),
            signal_handlers=True,
            websocket_max_frame_size=settings.WEBSOCKET_MAX_FRAME,
            websocket_max_message_size=settings.WEBSOCKET_MAX_FRAME,
            ready_callable=ready,
        )
        server.run()
        if server.abort_start or failed:
            raise CommandError("The gateway did not start: see the log above.")
        # Everything is stopped and drained. Skip the interpreter's final garbage collection, which
        # CPython 3.11 can crash (a segfault) on a coroutine still suspended in a dependency.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
