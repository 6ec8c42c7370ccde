"""The Datashop example in one command: the product (examples/product/app.py) and
``logstream up``, wired together through the auth callout.

    python examples/product/run.py [--port 9000] [--session-hours 8] [logstream up options]

for example ``python examples/product/run.py --ephemeral --proxy-port 3100``. Every option that
is not Datashop's own goes to ``logstream up`` (``logstream up --help`` lists them). Then open
http://127.0.0.1:9000 and sign in as alice / alice-password.

``logstream up`` is started with these variables; its services inherit them:

- ``LOGSTREAM_AUTH_CALLOUT_URL=http://127.0.0.1:<port>/auth/logstream``: the gateway asks
  Datashop who a caller without a Logstream token is;
- ``LOGSTREAM_FORWARD_COOKIES=datashop_session``: the proxy passes Datashop's session cookie
  on to the gateway;
- ``LOGSTREAM_SIGN_IN_URL=http://127.0.0.1:<port>/login``: the Logs page links there when the
  stream is refused for want of a session (and shows no dev-user picker);
- ``LOGSTREAM_AUTH_CALLOUT_TTL=10`` unless the environment sets it: an open stream asks
  Datashop again every 10 s, so signing out ends it within 10 s (the gateway's default is 60).

Ctrl-C (or SIGTERM) stops both: SIGINT to each, then a wait (``logstream up`` stops its own
services in order, within 10 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from logstream.up_plan import add_arguments as add_up_arguments

HERE = Path(__file__).resolve().parent
# `logstream up` starts four Python services and a broker: seconds when healthy, much longer
# on a busy laptop. Past this, something is wrong rather than slow.
READY_TIMEOUT_S = 90.0
# How long each child may take to stop after SIGINT before it is killed.
STOP_TIMEOUT_S = 15.0
DEMO_CALLOUT_TTL_S = "10"


class Stop:
    """SIGINT, SIGTERM and SIGHUP only note the request; the main loop acts on it."""

    def __init__(self) -> None:
        self.requested = False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._note)

    def _note(self, _signum: int, _frame: object) -> None:
        self.requested = True


def parse(argv: list[str]) -> tuple[argparse.Namespace, argparse.Namespace, list[str]]:
    """Datashop's options, ``logstream up``'s (checked here, so that a typo fails at once),
    and the arguments passed on to ``logstream up`` as they were given."""
    parser = argparse.ArgumentParser(
        description="Datashop (an example product with its own login) and `logstream up`, "
        "wired together. Other options go to `logstream up` (see `logstream up --help`).",
    )
    parser.add_argument("--port", type=int, default=9000, help="Datashop's port [9000]")
    parser.add_argument(
        "--session-hours", type=float, default=8.0, help="how long a Datashop sign-in lasts [8]"
    )
    ours, rest = parser.parse_known_args(argv)
    up_parser = argparse.ArgumentParser(prog="logstream up")
    add_up_arguments(up_parser)
    return ours, up_parser.parse_args(rest), rest


def url_host(host: str) -> str:
    """Where a browser on this machine reaches a service bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def answers(url: str) -> bool:
    # No proxy: a user's http_proxy must not route a probe of a local service.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as response:
            return response.status == 200
    except OSError:  # refused, timed out, or an HTTP error status such as 503
        return False


def stop_all(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    ours, up_args, up_argv = parse(argv)
    host = url_host(up_args.host)
    product_url = f"http://{host}:{ours.port}"
    logs_url = f"http://{host}:{up_args.proxy_port}"
    env = {
        **os.environ,
        "LOGSTREAM_AUTH_CALLOUT_URL": f"{product_url}/auth/logstream",
        "LOGSTREAM_FORWARD_COOKIES": "datashop_session",
        "LOGSTREAM_SIGN_IN_URL": f"{product_url}/login",
    }
    env.setdefault("LOGSTREAM_AUTH_CALLOUT_TTL", DEMO_CALLOUT_TTL_S)

    stop = Stop()
    # Each child in its own process group: a terminal's Ctrl-C reaches only this script, which
    # then stops both in order instead of all of them at once.
    product = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "app.py"),
            "--host",
            up_args.host,
            "--port",
            str(ours.port),
            "--logs-url",
            logs_url,
            "--session-hours",
            str(ours.session_hours),
        ],
        stdin=subprocess.DEVNULL,
        process_group=0,
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "logstream", "up", *up_argv],
        stdin=subprocess.DEVNULL,
        env=env,
        process_group=0,
    )
    children = {"Datashop": product, "logstream up": up}
    try:
        product_ready = ready = False
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not stop.requested:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    print(f"run.py: {name} exited with code {code}; stopping", file=sys.stderr)
                    return code or 1
            product_ready = product_ready or answers(f"{product_url}/login")
            if not ready and product_ready and answers(f"{logs_url}/ready"):
                ready = True
                print(
                    f"\nDatashop is up: open {product_url} and sign in as alice / "
                    "alice-password (or bob / bob-password),\nthen follow the Logs link. "
                    f"Signing out ends the Logs page's stream within "
                    f"{env['LOGSTREAM_AUTH_CALLOUT_TTL']} s. Ctrl-C stops everything.\n",
                    flush=True,
                )
            elif not ready and time.monotonic() > deadline:
                print(
                    f"run.py: not ready within {READY_TIMEOUT_S:g} s "
                    f"({product_url}/login, {logs_url}/ready); stopping",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
        return 0
    finally:
        stop_all([up, product])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
