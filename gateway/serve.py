"""``python -m gateway.serve config.asgi:application [daphne's options]``: daphne's command line,
serving with ``gateway.server.GatewayServer`` (scope extensions, lean connections, the header
deadline). For split deployments (deploy/); ``rungateway`` runs everything in one process instead."""

from __future__ import annotations

import os

from daphne.cli import CommandLineInterface

from gateway.server import GatewayServer


class GatewayCommandLine(CommandLineInterface):
    """daphne's CLI (its documented ``server_class`` attribute) with the gateway's server."""

    description = "Serve an ASGI application with the gateway's daphne server (gateway.server.GatewayServer)."
    server_class = GatewayServer


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    GatewayCommandLine.entrypoint()


if __name__ == "__main__":
    main()
