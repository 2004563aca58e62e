"""``python -m gateway.serve config.asgi:application [--processes N] [daphne's options]``: daphne's command
line, serving with ``gateway.server.GatewayServer`` (scope extensions, lean connections, the header
deadline). For split deployments (deploy/); ``rungateway`` runs everything in one process instead.
With ``--processes`` above 1 this process holds the listening socket and runs that many such servers on
it (gateway/process_group.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys

from gateway.process_group import follow_group_parent, parse_group_options, run_group

logger = logging.getLogger("gateway.serve")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    options = parse_group_options(sys.argv[1:])
    if options.processes > 1:
        sys.exit(run_group(options))
    follow_group_parent()
    # A reload is a group's (new processes beside the old ones); alone, SIGHUP would end the process.
    signal.signal(signal.SIGHUP, lambda *_: logger.warning("SIGHUP ignored: reloading needs ASGI_PROCESSES above 1"))
    from gateway.server import GatewayCommandLine  # daphne, Twisted and Django: not in a group's parent

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
