"""The ``logstream`` command: ``up``, one service alone, the simulator, or ``tail``.

Each service command builds its settings from flags and ``LOGSTREAM_*`` variables, refuses to
start on a bad value (naming it), and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from shared.errors import SettingsError
from shared.settings import add_flags, load_settings
from shared.structured_logging import configure_logging

__all__ = ["SERVICES", "build_parser", "main", "run_one_service"]

# service name -> package with ``settings.Settings`` and ``app.create_app(settings)``
SERVICES = {
    "ingest": "services.ingest",
    "gateway": "services.gateway",
    "proxy": "services.proxy",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logstream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="run the whole stack locally on an embedded nats-server")
    importlib.import_module("logstream.up").add_arguments(up)
    for name, module in SERVICES.items():
        sub = commands.add_parser(name, help=f"run the {name} service alone")
        add_flags(sub, importlib.import_module(module + ".settings").Settings)
    simulate = commands.add_parser("simulate", help="publish realistic ETL/FAAS/analytics logs")
    importlib.import_module("services.simulator.cli").add_arguments(simulate)
    tail = commands.add_parser("tail", help="follow channels in the terminal (kubectl logs -f)")
    importlib.import_module("logstream.tail").add_arguments(tail)
    return parser


def run_one_service(name: str, flags: dict) -> int:
    settings_cls = importlib.import_module(SERVICES[name] + ".settings").Settings
    try:
        settings = load_settings(settings_cls, os.environ, flags)
    except SettingsError as exc:
        print(f"logstream {name}: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(name, settings.log_level)
    from shared.web import run_service

    try:
        app = importlib.import_module(SERVICES[name] + ".app").create_app(settings)
    except SettingsError as exc:
        print(f"logstream {name}: {exc.message}", file=sys.stderr)
        return 2
    return run_service(app, settings, name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in SERVICES:
        flags = {k: v for k, v in vars(args).items() if k != "command"}
        return run_one_service(args.command, flags)
    if args.command == "up":
        return importlib.import_module("logstream.up").run(args)
    if args.command == "tail":
        return importlib.import_module("logstream.tail").run(args)
    return importlib.import_module("services.simulator.cli").run(args)
