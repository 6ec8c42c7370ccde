"""``logstream simulate continuous SECONDS | burst COUNT``: realistic traffic into ingest.

``continuous SECONDS`` publishes ``--rate`` records/s for SECONDS (0: until SIGINT/SIGTERM, as
``logstream up`` runs it); ``burst COUNT`` publishes COUNT records as fast as ingest takes
them. ``--via http`` (default) posts to ingest; ``--via nats`` sends requests on
``ingest.logs`` as the NATS producer user. Each distinct failure is printed to stderr as it
happens, a summary to stdout at the end, and the exit status is non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from logstream.services.simulator.runner import DEFAULT_RATE, Simulation, TokenBook, new_run_id
from logstream.services.simulator.scenarios import Traffic
from logstream.shared.channels import DEFAULT_SERVICES, valid_segment
from logstream.shared.identities import DEV_NATS_PRODUCER
from logstream.shared.ingest_client import TransportFailed, open_transport, redact_url

__all__ = ["add_arguments", "run"]

DEFAULT_INGEST_URL = "http://127.0.0.1:3001"
DEFAULT_NATS_URL = "nats://{}:{}@127.0.0.1:4222".format(*DEV_NATS_PRODUCER)
# With no COUNT, a burst is big enough to fill a page and small enough to finish in a second.
DEFAULT_BURST = 1000
# Conventional exit status of a command stopped by SIGINT before it finished its work.
EXIT_INTERRUPTED = 130
# (flag dest, environment variable): the environment fills what the command line leaves out.
_ENVIRONMENT = (
    ("ingest_url", "LOGSTREAM_INGEST_URL"),
    ("nats_url", "LOGSTREAM_SIMULATOR_NATS_URL"),
    ("via", "LOGSTREAM_SIMULATOR_VIA"),
    ("rate", "LOGSTREAM_SIMULATOR_RATE"),
    ("token", "LOGSTREAM_SIMULATOR_TOKEN"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument(
        "mode",
        choices=("continuous", "burst"),
        help="continuous: paced for SECONDS; burst: COUNT records at once",
    )
    parser.add_argument(
        "amount",
        nargs="?",
        metavar="SECONDS|COUNT",
        help="seconds to run (continuous, 0 = until stopped; default 0) or "
        f"records to send (burst, default {DEFAULT_BURST})",
    )
    parser.add_argument(
        "--via",
        choices=("http", "nats"),
        help="how to reach ingest [LOGSTREAM_SIMULATOR_VIA, default: http]",
    )
    parser.add_argument(
        "--rate",
        help="records per second in continuous mode "
        f"[LOGSTREAM_SIMULATOR_RATE, default: {DEFAULT_RATE:g}]",
    )
    parser.add_argument("--seed", help="reproduce the same traffic (records still get new ids)")
    parser.add_argument(
        "--ingest-url",
        help="ingest base URL for --via http [LOGSTREAM_"
        f"INGEST_URL, default: {DEFAULT_INGEST_URL}]",
    )
    parser.add_argument(
        "--nats-url",
        help="NATS URL, as the producer user, for --via nats "
        "[LOGSTREAM_SIMULATOR_NATS_URL, default: "
        f"{redact_url(DEFAULT_NATS_URL)}]",
    )
    parser.add_argument(
        "--token",
        help="service token for every record, instead of the dev "
        "token of each record's service "
        "[LOGSTREAM_SIMULATOR_TOKEN]",
    )
    parser.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help="only this service's traffic (etl, faas, analytics, platform); "
        "repeat or comma-separate for several",
    )
    parser.add_argument("--run-id", help="prefix of the record ids (default: random per run)")


@dataclass(frozen=True, slots=True)
class _Options:
    mode: str
    amount: float
    via: str
    rate: float
    seed: int | None
    ingest_url: str
    nats_url: str
    token: str | None
    services: frozenset[str]
    run_id: str


def _options(args: argparse.Namespace, environ: Mapping[str, str]) -> _Options:
    """Flags, then ``LOGSTREAM_*`` variables, then defaults; a bad value names its flag."""
    given = {
        name: getattr(args, name, None) or environ.get(variable) or None
        for name, variable in _ENVIRONMENT
    }
    via = given["via"] or "http"
    if via not in ("http", "nats"):
        raise ValueError(f"--via / LOGSTREAM_SIMULATOR_VIA must be http or nats (given {via!r})")
    rate = _number("--rate", given["rate"] or DEFAULT_RATE, float, low=0.001)
    if args.mode == "burst":
        amount = _number("COUNT", args.amount or DEFAULT_BURST, int, low=1)
    else:
        amount = _number("SECONDS", args.amount or 0, float, low=0)
    seed = _number("--seed", args.seed, int, low=0) if args.seed is not None else None
    services = (
        frozenset(
            name.strip()
            for part in (args.service or ())
            for name in part.split(",")
            if name.strip()
        )
        or DEFAULT_SERVICES
    )
    if not services <= DEFAULT_SERVICES:
        unknown = ", ".join(sorted(services - DEFAULT_SERVICES))
        raise ValueError(
            f"--service: no simulated traffic for {unknown} "
            f"(one of {', '.join(sorted(DEFAULT_SERVICES))})"
        )
    run_id = args.run_id or new_run_id()
    if not valid_segment(run_id):
        raise ValueError(f"--run-id {run_id!r} must be 1-64 characters of A-Z, a-z, 0-9, _ or -")
    return _Options(
        args.mode,
        amount,
        via,
        rate,
        seed,
        given["ingest_url"] or DEFAULT_INGEST_URL,
        given["nats_url"] or DEFAULT_NATS_URL,
        given["token"],
        services,
        run_id,
    )


def _number(name: str, text, kind, *, low: float):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a {'whole ' if kind is int else ''}number (given {text!r})"
        ) from None
    if not value >= low:
        raise ValueError(f"{name} must be at least {low:g} (given {text!r})")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        options = _options(args, os.environ)
    except ValueError as exc:
        print(f"logstream simulate: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_simulate(options))
    except (KeyboardInterrupt, asyncio.CancelledError):  # a second signal while draining
        return EXIT_INTERRUPTED


async def _simulate(options: _Options) -> int:
    try:
        transport = await open_transport(
            options.via, ingest_url=options.ingest_url, nats_url=options.nats_url
        )
    except TransportFailed as exc:
        print(f"logstream simulate: {exc.message}", file=sys.stderr)
        return 1
    traffic = Traffic(options.seed, services=options.services)
    simulation = Simulation(
        transport, traffic, run_id=options.run_id, tokens=TokenBook.dev(override=options.token)
    )
    _stop_on_signals(simulation.stop)
    target = redact_url(options.ingest_url if options.via == "http" else options.nats_url)
    what = (
        f"burst of {int(options.amount):,} records"
        if options.mode == "burst"
        else f"{options.rate:g} records/s for "
        + (f"{options.amount:g} s" if options.amount else "ever (until stopped)")
    )
    print(
        f"simulate: {what} via {options.via} to {target} (run {simulation.run_id}, "
        f"seed {traffic.seed})",
        file=sys.stderr,
        flush=True,
    )
    try:
        if options.mode == "burst":
            tally = await simulation.burst(int(options.amount))
        else:
            tally = await simulation.continuous(options.amount, options.rate)
    finally:
        await transport.close()
    for line in tally.summary_lines(via=options.via, run_id=simulation.run_id, seed=traffic.seed):
        print(line, flush=True)
    if not tally.ok:
        return 1
    return EXIT_INTERRUPTED if tally.interrupted and options.mode == "burst" else 0


def _stop_on_signals(stop: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM stops the run gracefully; a second one ends it at once."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def handle() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, handle)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
