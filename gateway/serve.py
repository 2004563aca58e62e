"""``python -m gateway.serve config.asgi:application [daphne's options]``: daphne's command line,
serving with ``gateway.server.GatewayServer`` (scope extensions, lean connections, the header
deadline). For split deployments (deploy/); ``rungateway`` runs everything in one process instead."""

from __future__ import annotations

import logging
import os
import sys

from daphne.cli import CommandLineInterface

from gateway.server import GatewayServer


class GatewayCommandLine(CommandLineInterface):
    """daphne's CLI (its documented ``server_class`` attribute) with the gateway's server."""

    description = "Serve an ASGI application with the gateway's daphne server (gateway.server.GatewayServer)."
    server_class = GatewayServer


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    GatewayCommandLine.entrypoint()
    # The server has stopped (daphne ended its application instances). Skip the interpreter's final
    # teardown, as rungateway does: with 10,000 connections it took over 10 s after SIGTERM (longer than
    # a service manager's stop timeout, so a restart became a kill), and CPython 3.11 can crash in it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
