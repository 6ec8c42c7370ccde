"""The soak: the whole Logstream stack under steady mixed load for a long run (issue 18, item 3).

    python -m bench.soak                  # 30 minutes; writes bench/SOAK.md and bench/soak.png
    python -m bench.soak --minutes 5      # shorter
    python -m bench.soak --out /tmp/soak  # the results elsewhere

Starts its own stack on free loopback ports (an embedded nats-server, ingest, two gateways and
the proxy in front of the first), publishes through ingest, reconnects 50 streams a second,
keeps long-lived and stalled readers, restarts the broker at half time, samples every service
every 10 s and checks the ledger at the end. Exit status 1 when the target is missed: every
series flat after warm-up and the ledger balanced (bench/README.md, "Soak").
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cases.soak import SoakConfig, soak_case
from bench.machine import machine_summary, raise_open_files, versions
from bench.soak_report import evaluate, plot_soak, render
from logstream.shared.embedded_nats import find_nats_server

BENCH_DIR = Path(__file__).resolve().parent
_VERSIONS = ("python", "nats-server", "uvicorn", "uvloop", "nats-py")


def parse_args(argv) -> argparse.Namespace:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--minutes", type=float, default=defaults.minutes, help="length of the load (30)"
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR, help="where SOAK.md and soak.png go (bench/)"
    )
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="records/s published (300)"
    )
    parser.add_argument(
        "--reconnects", type=float, default=defaults.reconnects, help="stream opens/s (50)"
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=None,
        help="how long a stalled reader stays unread (60, or a quarter of a shorter run)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the load's random seed")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir with the services' logs"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    duration = args.minutes * 60
    config = SoakConfig(
        minutes=args.minutes,
        rate=args.rate,
        reconnects=args.reconnects,
        stall_s=args.stall_s if args.stall_s is not None else min(60.0, duration / 4),
        seed=args.seed,
    )
    raise_open_files()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.soak " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.strftime("%Y-%m-%d %H:%M")
    machine = machine_summary()
    found = versions(find_nats_server(), None)
    print(f"soak: {args.minutes:g} min, results to {out}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="logstream-soak-"))
    try:
        result = asyncio.run(soak_case(config, workdir))
    finally:
        if args.keep:
            print(f"  logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    verdict = evaluate(result)
    png = out / "soak.png"
    plotted = plot_soak(result, verdict, png)
    text = render(
        result,
        verdict,
        command=command.strip(),
        machine=machine,
        versions={name: found.get(name, "?") for name in _VERSIONS},
        started=started,
        png=png.name if plotted else None,
    )
    (out / "SOAK.md").write_text(text)
    print(f"soak: {'PASS' if verdict.passed else 'FAIL'}; wrote {out / 'SOAK.md'}", flush=True)
    for problem in verdict.problems:
        print(f"  - {problem}", flush=True)
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
