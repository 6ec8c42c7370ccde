"""``logstream tail CHANNEL...``: follow channels in the terminal, like ``kubectl logs -f``.

``--url`` is a gateway (default) or the proxy. A gateway streams every channel on one
connection (wildcards too). Through the proxy, tail follows the product routes a browser of
the product would use: it reads the route table from the proxy and opens one stream per
channel through the route whose template fits it; a channel no route fits (a wildcard, a
resource-less ETL channel...) is refused before anything is opened, naming the routes (the
proxy's own ``/api/logs/stream`` pass-through takes any channels, and a gateway URL does).

The token comes from ``--token``, ``--token-file`` (read again on each reconnect) or
``LOGSTREAM_TOKEN``; with none, tail signs a dev-mode token for ``--user`` (default user123),
which only a dev-mode gateway accepts. History: ``--since``/``--tail`` on the first connection;
filters ``--level`` (that level and above), ``--grep`` (substring) and ``--where`` (an
expression on the record's fields, docs/reference/where.md) apply on the server.
A dropped connection, a draining gateway or an ``overflow`` reconnects with ``Last-Event-ID``
(the last seq printed), so nothing is lost or printed twice; ``auth-expired`` reconnects with a
fresh token when there is one to get (dev token, token file) and ends otherwise. ``--count N``
exits after N records. Ctrl-C exits quietly with 0; a 4xx exits 1 with the status and the
server's message; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from logstream.shared.identities import DEV_JWT_SECRET, DEV_USERS
from logstream.shared.ingest_client import describe_error
from logstream.shared.user_tokens import UserTokens

__all__ = ["DEFAULT_URL", "RecordPrinter", "TokenSource", "add_arguments", "plan_streams", "run"]

DEFAULT_URL = "http://127.0.0.1:3002"
STREAM_PATH = "/api/logs/stream"
EXIT_REFUSED, EXIT_USAGE = 1, 2
# The gateway sends a heartbeat every 15 s by default; six missed ones mean a dead connection
# (a reconnect with Last-Event-ID costs nothing, so a false alarm is harmless).
READ_TIMEOUT_S = 90.0
CONNECT_TIMEOUT_S = 5.0
# Reconnect waits: the server's ``retry:`` hint, doubled while failures repeat, up to this.
MAX_RECONNECT_WAIT_S = 10.0
DEFAULT_RETRY_MS = 2000
# The proxy's route table (services/proxy/app.py ROUTES_PATH); a gateway answers it 404.
PROXY_ROUTES_PATH = "/api/logs/routes"
_PARAM = re.compile(r"\\\{([A-Za-z_][A-Za-z0-9_]*)\\\}")
_COLORS = {"trace": "2", "debug": "2", "info": "32", "warn": "33", "error": "31", "fatal": "1;31"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Follow log channels in the terminal, like kubectl logs -f: history "
        "first if asked, then live records, resuming after drops."
    )
    parser.add_argument(
        "channels",
        nargs="+",
        metavar="CHANNEL",
        help="logs:<service>:<workspace>[:<resource>]; '*' for a whole segment",
    )
    parser.add_argument(
        "--url", help=f"gateway or proxy base URL [LOGSTREAM_TAIL_URL, default: {DEFAULT_URL}]"
    )
    parser.add_argument("--token", help="user token [LOGSTREAM_TOKEN]")
    parser.add_argument(
        "--token-file", help="file holding the user token, read again on every reconnect"
    )
    parser.add_argument(
        "--user",
        default="user123",
        choices=sorted(DEV_USERS),
        help="with no token: sign a dev-mode token for this user (default: user123)",
    )
    parser.add_argument("--since", help="history first: RFC 3339 time or 30s, 10m, 2h")
    parser.add_argument("--tail", type=_count, metavar="N", help="history first: last N records")
    parser.add_argument("--level", help="only this level and above (trace ... fatal)")
    parser.add_argument("--grep", metavar="TEXT", help="only records containing TEXT")
    parser.add_argument(
        "--where",
        metavar="EXPR",
        help='only records this expression accepts, e.g. "fields.rows > 1000 and level >= '
        'warn" (docs/reference/where.md)',
    )
    parser.add_argument(
        "--json", action="store_true", help="print each delivered record as one JSON line"
    )
    parser.add_argument("--count", type=_count, metavar="N", help="exit after N records")


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


class TailError(Exception):
    """Ends the command: ``message`` for stderr, ``exit_code`` for the shell."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


@dataclass
class TokenSource:
    """Where the user token comes from, and whether a fresh one can be had."""

    static: str | None = None
    path: str | None = None
    dev_user: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> TokenSource:
        if args.token:
            return cls(static=args.token)
        if args.token_file:
            return cls(path=args.token_file)
        if environ.get("LOGSTREAM_TOKEN"):
            return cls(static=environ["LOGSTREAM_TOKEN"])
        return cls(dev_user=args.user)

    @property
    def refreshable(self) -> bool:
        return self.static is None

    def current(self) -> str:
        if self.static is not None:
            return self.static
        if self.path is not None:
            try:
                return Path(self.path).read_text().strip()
            except OSError as exc:
                raise TailError(f"cannot read --token-file {self.path}: {exc.strerror}") from None
        assert self.dev_user is not None, "from_args() always sets one of the three"
        return UserTokens(DEV_JWT_SECRET).issue_dev(self.dev_user)


@dataclass(frozen=True)
class StreamSpec:
    """One connection to open: its URL, its query, and which channel(s) it carries."""

    url: str
    params: tuple[tuple[str, str], ...]
    label: str


def _filters(args: argparse.Namespace, *, first: bool) -> list[tuple[str, str]]:
    """Query parameters: filters on every connection, history only on the first."""
    pairs = [("level", args.level), ("q", args.grep), ("where", args.where)]
    if first:
        pairs += [("since", args.since), ("tail", None if args.tail is None else str(args.tail))]
    return [(name, value) for name, value in pairs if value]


def route_match(template: str, channel: str) -> dict[str, str] | None:
    """The route parameters that make ``template`` into ``channel``, or None if it cannot."""
    pattern = _PARAM.sub(r"(?P<\1>[A-Za-z0-9_-]{1,64})", re.escape(template))
    found = re.fullmatch(pattern, channel)
    return found.groupdict() if found else None


def plan_streams(base: str, channels: list[str], routes: list[dict] | None) -> list[StreamSpec]:
    """One gateway stream for every channel, or (proxy) one route stream per channel."""
    if routes is None:
        return [
            StreamSpec(base + STREAM_PATH, (("channels", ",".join(channels)),), ",".join(channels))
        ]
    specs = []
    for channel in channels:
        for route in routes:
            params = route_match(str(route.get("channel", "")), channel)
            if params is not None:
                specs.append(StreamSpec(base + route["path"], tuple(params.items()), channel))
                break
        else:
            known = ", ".join(str(route.get("channel")) for route in routes) or "none"
            raise TailError(
                f"{base} is a Logstream proxy and no route of it streams {channel} (its "
                f"routes: {known}); give a gateway URL for other channels and wildcards",
                EXIT_USAGE,
            )
    return specs


async def discover_routes(client: httpx.AsyncClient, base: str) -> list[dict] | None:
    """The proxy's route table (``GET /api/logs/routes``); None when ``base`` is not a proxy."""
    try:
        answer = await client.get(base + PROXY_ROUTES_PATH)
    except httpx.HTTPError as exc:
        raise TailError(f"cannot reach {base}: {describe_error(exc)}") from None
    if answer.status_code != 200:
        return None
    try:
        routes = answer.json().get("routes")
    except (ValueError, AttributeError):
        return None
    return routes if isinstance(routes, list) else None


class RecordPrinter:
    """Writes records to ``out``: human lines or ``--json`` lines; counts them for --count."""

    def __init__(
        self, out, *, as_json: bool, show_channel: bool, color: bool, count: int | None
    ) -> None:
        self.out, self.as_json, self.show_channel = out, as_json, show_channel
        self.color, self.count, self.printed = color, count, 0
        self.done = asyncio.Event()

    def print(self, data: str) -> None:
        if self.done.is_set():
            return
        self.out.write((data if self.as_json else self.human(json.loads(data))) + "\n")
        self.out.flush()
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.done.set()

    def human(self, record: dict[str, Any]) -> str:
        level = str(record.get("level", "info"))
        shown = f"{level.upper():5}"
        if self.color:
            shown = f"\x1b[{_COLORS.get(level, '0')}m{shown}\x1b[0m"
        parts = [str(record.get("timestamp", "")), shown]
        if self.show_channel:
            parts.append(str(record.get("channel", "")))
        if record.get("source"):
            parts.append(f"[{record['source']}]")
        first, *rest = str(record.get("message", "")).split("\n")
        parts.append(first)
        blocks = [rest] if rest else []
        fields = dict(record.get("fields") or {})
        if isinstance(fields.get("stack"), str):
            fields.pop("exception", None)  # the traceback's last line says the same
        for key, value in fields.items():
            if isinstance(value, str) and "\n" in value:
                blocks.append(([] if key == "stack" else [f"{key}:"]) + value.split("\n"))
            else:
                shown_value = (
                    value
                    if isinstance(value, str) and " " not in value
                    else (json.dumps(value, ensure_ascii=False, separators=(",", ":")))
                )
                parts.append(f"{key}={shown_value}")
        lines = [" ".join(parts)] + ["    " + line for block in blocks for line in block]
        return "\n".join(lines)


@dataclass
class _Cursor:
    last: int | None = None
    failures: int = 0
    retry_ms: int = DEFAULT_RETRY_MS


async def follow(
    client: httpx.AsyncClient,
    spec: StreamSpec,
    args: argparse.Namespace,
    tokens: TokenSource,
    printer: RecordPrinter,
) -> None:
    """Read one stream for ever, reconnecting after the cursor; raises ``TailError`` to end."""
    cursor = _Cursor()
    while True:
        headers = {"Authorization": f"Bearer {tokens.current()}"}
        if cursor.last is not None:
            headers["Last-Event-ID"] = str(cursor.last)
        params = list(spec.params) + _filters(args, first=cursor.last is None)
        try:
            async with aconnect_sse(
                client, "GET", spec.url, params=params, headers=headers
            ) as source:
                if source.response.status_code != 200:
                    await _refused(source.response, cursor)
                    continue
                ending = await _read(source, cursor, printer, spec)
        except httpx.TransportError as exc:
            if cursor.last is None and cursor.failures == 0:
                raise TailError(f"cannot reach {spec.url}: {describe_error(exc)}") from None
            ending = f"connection lost ({describe_error(exc)})"
        if ending == "auth-expired":
            if not tokens.refreshable:
                raise TailError(
                    "the token expired; give a fresh --token (or use --token-file, "
                    "which is read again on every reconnect)"
                )
            continue
        await _pause(cursor, ending, spec, immediate=ending == "overflow")


async def _read(source, cursor: _Cursor, printer: RecordPrinter, spec: StreamSpec) -> str:
    """Events until the stream ends; returns why it ended."""
    if cursor.failures:
        _note(f"reconnected to {spec.label} after seq {cursor.last}")
    cursor.failures = 0
    async for event in source.aiter_sse():
        if event.retry is not None:
            cursor.retry_ms = event.retry
        if event.event == "log":
            seq = int(event.id)
            if cursor.last is not None and seq <= cursor.last:
                continue  # already printed: a resume never repeats a record
            cursor.last = seq
            printer.print(event.data)
        elif event.event == "connected" and cursor.last is None and event.id.isdigit():
            cursor.last = int(event.id)
        elif event.event == "gap":
            gap = json.loads(event.data)
            _note(
                f"records {gap.get('from')}-{gap.get('to')} of {spec.label} aged out of "
                "retention before they could be read"
            )
        elif event.event in ("overflow", "auth-expired"):
            return event.event
    return "the stream ended"


async def _refused(response: httpx.Response, cursor: _Cursor) -> None:
    """A 4xx ends the command; 5xx (broker down, no gateway) waits and tries again."""
    await response.aread()
    try:
        body = response.json()
        error, message = body.get("error", "error"), body.get("message", "")
    except (ValueError, AttributeError):
        error, message = response.reason_phrase.lower(), response.text[:300]
    if response.status_code < 500:
        raise TailError(f"{response.status_code} {error}: {message}")
    cursor.failures += 1
    wait = response.headers.get("retry-after", "")
    if wait.isdigit():
        cursor.retry_ms = int(wait) * 1000
    if cursor.failures == 1:
        _note(f"{response.status_code} {error}: {message}; retrying")
    await asyncio.sleep(min(cursor.retry_ms / 1000, MAX_RECONNECT_WAIT_S))


async def _pause(cursor: _Cursor, why: str, spec: StreamSpec, *, immediate: bool) -> None:
    cursor.failures += 1
    if cursor.failures == 1:  # once per outage, not once per attempt
        _note(f"{spec.label}: {why}; resuming after seq {cursor.last}")
    if not immediate:
        wait = cursor.retry_ms / 1000 * 2 ** (cursor.failures - 1)
        await asyncio.sleep(min(wait, MAX_RECONNECT_WAIT_S))


async def tail(args: argparse.Namespace, environ: Mapping[str, str], out=None) -> int:
    out = out or sys.stdout
    base = (args.url or environ.get("LOGSTREAM_TAIL_URL") or DEFAULT_URL).rstrip("/")
    tokens = TokenSource.from_args(args, environ)
    if tokens.dev_user:
        _note(f"no --token or LOGSTREAM_TOKEN: using a dev-mode token for {tokens.dev_user}")
    timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
    async with httpx.AsyncClient(timeout=timeout) as client:
        specs = plan_streams(
            base, list(dict.fromkeys(args.channels)), await discover_routes(client, base)
        )
        printer = RecordPrinter(
            out,
            as_json=args.json,
            count=args.count,
            show_channel=len(args.channels) > 1 or "*" in args.channels[0],
            color=out.isatty() and "NO_COLOR" not in environ,
        )
        if args.count == 0:
            return 0
        followers = [
            asyncio.create_task(follow(client, spec, args, tokens, printer)) for spec in specs
        ]
        finished = asyncio.create_task(printer.done.wait())
        try:
            done, _ = await asyncio.wait(
                [*followers, finished], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not finished:
                    task.result()  # a follower only returns by raising TailError
        finally:
            for task in (*followers, finished):
                task.cancel()
            await asyncio.gather(*followers, finished, return_exceptions=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(tail(args, os.environ))
    except TailError as exc:
        print(f"logstream tail: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `logstream tail ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _note(text: str) -> None:
    print(f"logstream tail: {text}", file=sys.stderr, flush=True)
