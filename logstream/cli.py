"""The ``logstream`` command: ``up``, one service alone, the simulator, or ``tail``.

Each service command builds its settings from flags and ``LOGSTREAM_*`` variables, refuses to
start on a bad value (naming it), and serves until SIGINT/SIGTERM.

The client install (``pip install ./client``: the SDK and ``tail``) has no services; there the
service commands are listed but say which install they need instead of running.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

__all__ = ["SERVER_COMMANDS", "SERVICES", "build_parser", "main", "run_one_service"]

# service name -> package with ``settings.Settings`` and ``app.create_app(settings)``
SERVICES = {
    "ingest": "logstream.services.ingest",
    "gateway": "logstream.services.gateway",
    "proxy": "logstream.services.proxy",
}
SERVER_COMMANDS = ("up", *SERVICES, "simulate")
FULL_INSTALL = "pip install logstream (the full package; from a clone: pip install .)"


def server_installed() -> bool:
    """Whether this install has the services (the full package) or only the client."""
    return importlib.util.find_spec("logstream.services") is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logstream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if server_installed():
        from logstream.shared.settings import add_flags

        up = commands.add_parser(
            "up", help="run the whole stack locally on an embedded nats-server"
        )
        importlib.import_module("logstream.up").add_arguments(up)
        for name, module in SERVICES.items():
            sub = commands.add_parser(name, help=f"run the {name} service alone")
            add_flags(sub, importlib.import_module(module + ".settings").Settings)
        simulate = commands.add_parser("simulate", help="publish realistic ETL/FAAS/analytics logs")
        importlib.import_module("logstream.services.simulator.cli").add_arguments(simulate)
    else:
        for name in SERVER_COMMANDS:
            stub = commands.add_parser(name, help="needs the full install", add_help=False)
            stub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    tail = commands.add_parser("tail", help="follow channels in the terminal (kubectl logs -f)")
    importlib.import_module("logstream.tail").add_arguments(tail)
    return parser


def run_one_service(name: str, flags: dict) -> int:
    from logstream.shared.errors import SettingsError
    from logstream.shared.settings import load_settings
    from logstream.shared.structured_logging import configure_logging
    from logstream.shared.web import run_service

    settings_cls = importlib.import_module(SERVICES[name] + ".settings").Settings
    try:
        settings = load_settings(settings_cls, os.environ, flags)
    except SettingsError as exc:
        print(f"logstream {name}: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(name, settings.log_level)
    try:
        app = importlib.import_module(SERVICES[name] + ".app").create_app(settings)
    except SettingsError as exc:
        print(f"logstream {name}: {exc.message}", file=sys.stderr)
        return 2
    return run_service(app, settings, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tail":
        return importlib.import_module("logstream.tail").run(args)
    if not server_installed():
        print(
            f"logstream {args.command}: this install has only the client (the SDK and tail); "
            f"the services need {FULL_INSTALL}",
            file=sys.stderr,
        )
        return 2
    if args.command in SERVICES:
        flags = {k: v for k, v in vars(args).items() if k != "command"}
        return run_one_service(args.command, flags)
    if args.command == "up":
        return importlib.import_module("logstream.up").run(args)
    return importlib.import_module("logstream.services.simulator.cli").run(args)
