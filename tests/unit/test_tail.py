"""``logstream tail``: output, route mapping, tokens, and the follow loop against scripted streams.

The follow loop reads from ``httpx.MockTransport`` streams scripted frame by frame (overflow,
a dropped connection, auth-expired, refusals); the real gateway and proxy are in
tests/integration/test_clients.py.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import pytest

from logstream.cli import build_parser
from logstream.shared.identities import DEV_JWT_SECRET
from logstream.shared.sse import sse_frame
from logstream.shared.user_tokens import UserTokens
from logstream.tail import (
    RecordPrinter,
    StreamSpec,
    TailError,
    TokenSource,
    follow,
    plan_streams,
    route_match,
)

CHANNEL = "logs:etl:workspace123:workflow456"
ROUTES = [
    {
        "path": "/api/dapadmin/l5-etl/sse/logs/stream",
        "channel": "logs:etl:{workspace_id}:{workflow_id}",
    },
    {"path": "/api/dapadmin/analytics/sse/logs/stream", "channel": "logs:analytics:{workspace_id}"},
]
DEADLINE_S = 10.0


def args_of(*argv: str):
    return build_parser().parse_args(["tail", *argv])


def record(seq: int, message: str = "m", **extra) -> dict:
    return {
        "seq": seq,
        "channel": CHANNEL,
        "level": "info",
        "message": message,
        "timestamp": "2026-01-31T12:00:00.000Z",
        "received_at": "2026-01-31T12:00:00.001Z",
        "publisher": "l5-etl-token",
        "source": None,
        "fields": None,
        "id": None,
        **extra,
    }


def log_frame(seq: int) -> bytes:
    return sse_frame(id=seq, event="log", data=json.dumps(record(seq)))


def opening(cursor: int) -> bytes:
    return sse_frame(retry=1, id=cursor, event="connected", data='{"connection_id": "c"}')


# -- output ------------------------------------------------------------------------------------


def test_a_human_line_has_time_level_source_message_and_fields():
    printer = RecordPrinter(
        io.StringIO(), as_json=False, show_channel=False, color=False, count=None
    )
    line = printer.human(
        record(
            7,
            "loaded rows",
            level="warn",
            source="etl.load",
            fields={"rows": 1200, "table": "orders", "note": "two words", "tags": ["a"]},
        )
    )
    assert line == (
        "2026-01-31T12:00:00.000Z WARN  [etl.load] loaded rows rows=1200 "
        'table=orders note="two words" tags=["a"]'
    )


def test_tracebacks_and_multi_line_messages_are_indented_under_their_line():
    # with a stack, the exception's type and message are its last line: not repeated
    printer = RecordPrinter(
        io.StringIO(), as_json=False, show_channel=True, color=False, count=None
    )
    text = printer.human(
        record(
            8,
            "load failed\nsecond line",
            level="error",
            fields={
                "exception": {"type": "KeyError", "message": "'x'"},
                "stack": "Traceback (most recent call last):\n  File \"a.py\"\nKeyError: 'x'",
                "query": "SELECT 1\nFROM t",
            },
        )
    )
    assert text.split("\n") == [
        f"2026-01-31T12:00:00.000Z ERROR {CHANNEL} load failed",
        "    second line",
        "    Traceback (most recent call last):",
        '      File "a.py"',
        "    KeyError: 'x'",
        "    query:",
        "    SELECT 1",
        "    FROM t",
    ]


def test_color_marks_the_level_only_when_asked():
    printer = RecordPrinter(
        io.StringIO(), as_json=False, show_channel=False, color=True, count=None
    )
    assert "\x1b[31mERROR\x1b[0m" in printer.human(record(1, level="error"))


def test_json_mode_prints_each_delivered_record_verbatim_and_count_ends_it():
    out = io.StringIO()
    printer = RecordPrinter(out, as_json=True, show_channel=False, color=False, count=2)
    for seq in (1, 2, 3):
        printer.print(json.dumps(record(seq)))
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 2]
    assert printer.done.is_set()


# -- where to connect ---------------------------------------------------------------------------


def test_a_gateway_gets_every_channel_on_one_stream():
    [spec] = plan_streams("http://gw", [CHANNEL, "logs:faas:workspace123:*"], None)
    assert spec.url == "http://gw/api/logs/stream"
    assert spec.params == (("channels", f"{CHANNEL},logs:faas:workspace123:*"),)


def test_the_proxy_gets_one_route_stream_per_channel():
    specs = plan_streams("http://proxy", [CHANNEL, "logs:analytics:workspace123"], ROUTES)
    assert [(s.url, s.params) for s in specs] == [
        (
            "http://proxy/api/dapadmin/l5-etl/sse/logs/stream",
            (("workspace_id", "workspace123"), ("workflow_id", "workflow456")),
        ),
        (
            "http://proxy/api/dapadmin/analytics/sse/logs/stream",
            (("workspace_id", "workspace123"),),
        ),
    ]


@pytest.mark.parametrize(
    "channel", ["logs:etl:workspace123:*", "logs:etl:workspace123", "logs:faas:workspace123:fn1"]
)
def test_a_channel_no_proxy_route_streams_is_a_usage_error_naming_the_routes(channel):
    with pytest.raises(TailError) as refused:
        plan_streams("http://proxy", [channel], ROUTES)
    assert refused.value.exit_code == 2
    assert f"no route of it streams {channel}" in refused.value.message
    assert "logs:etl:{workspace_id}:{workflow_id}" in refused.value.message
    assert "give a gateway URL" in refused.value.message


def test_route_templates_match_whole_segments_only():
    template = "logs:etl:{workspace_id}:{workflow_id}"
    assert route_match(template, "logs:etl:w1:f1") == {"workspace_id": "w1", "workflow_id": "f1"}
    assert route_match(template, "logs:etl:w1:f1:x") is None
    assert route_match(template, "logs:etlx:w1:f1") is None
    assert route_match("logs:a.b:{w}", "logs:aXb:w1") is None  # template text is literal


def test_history_goes_only_on_the_first_connection_filters_on_every_one():
    from logstream.tail import _filters

    args = args_of(
        CHANNEL, "--since", "10m", "--tail", "5", "--level", "warn", "--grep", "x", "--where", "a=1"
    )
    assert _filters(args, first=True) == [
        ("level", "warn"),
        ("q", "x"),
        ("where", "a=1"),
        ("since", "10m"),
        ("tail", "5"),
    ]
    assert _filters(args, first=False) == [("level", "warn"), ("q", "x"), ("where", "a=1")]


def test_counts_must_be_whole_numbers():
    with pytest.raises(SystemExit):
        args_of(CHANNEL, "--tail", "-1")
    with pytest.raises(SystemExit):
        args_of(CHANNEL, "--count", "many")


# -- tokens ----------------------------------------------------------------------------------


def test_token_precedence_is_flag_then_file_then_environment_then_dev(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert (
        TokenSource.from_args(args_of(CHANNEL, "--token", "t"), {"LOGSTREAM_TOKEN": "e"}).current()
        == "t"
    )
    from_file = TokenSource.from_args(
        args_of(CHANNEL, "--token-file", str(path)), {"LOGSTREAM_TOKEN": "e"}
    )
    assert from_file.current() == "from-file" and from_file.refreshable
    path.write_text("rotated")
    assert from_file.current() == "rotated"
    from_env = TokenSource.from_args(args_of(CHANNEL), {"LOGSTREAM_TOKEN": "e"})
    assert from_env.current() == "e" and not from_env.refreshable
    dev = TokenSource.from_args(args_of(CHANNEL, "--user", "user456"), {})
    user = UserTokens(DEV_JWT_SECRET).verify(dev.current())
    assert user.user_id == "user456" and user.workspaces == {"workspace456"} and dev.refreshable


def test_an_unreadable_token_file_ends_with_a_message(tmp_path):
    source = TokenSource(path=str(tmp_path / "missing"))
    with pytest.raises(TailError, match="cannot read --token-file"):
        source.current()


# -- the follow loop ----------------------------------------------------------------------------


class ScriptedServer:
    """Answers each connection with the next scripted response; keeps every request."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else [opening(0)]
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=_frames(answer)
        )


async def _frames(parts):
    for part in parts:
        if isinstance(part, Exception):
            raise part
        yield part
        await asyncio.sleep(0)


async def run_follow(
    server: ScriptedServer, argv=(), *, count: int | None = None, tokens: TokenSource | None = None
):
    out = io.StringIO()
    printer = RecordPrinter(out, as_json=True, show_channel=False, color=False, count=count)
    spec = StreamSpec("http://gw/api/logs/stream", (("channels", CHANNEL),), CHANNEL)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        task = asyncio.create_task(
            follow(
                client, spec, args_of(CHANNEL, *argv), tokens or TokenSource(static="tok"), printer
            )
        )
        done = asyncio.create_task(printer.done.wait())
        try:
            finished, _ = await asyncio.wait(
                {task, done}, timeout=DEADLINE_S, return_when=asyncio.FIRST_COMPLETED
            )
            assert finished, "follow neither ended nor printed enough"
            if task in finished:
                task.result()
        finally:
            task.cancel()
            done.cancel()
    return [json.loads(line)["seq"] for line in out.getvalue().splitlines()]


async def test_overflow_and_a_dropped_connection_resume_after_the_last_printed_seq(capsys):
    server = ScriptedServer(
        [
            opening(10),
            log_frame(11),
            log_frame(12),
            sse_frame(event="overflow", data='{"reason": "slow"}'),
        ],
        [opening(12), log_frame(12), log_frame(13), httpx.ReadError("reset by peer")],
        [opening(13), log_frame(14)],
    )
    seqs = await run_follow(server, ["--tail", "5", "--level", "warn"], count=4)
    assert seqs == [11, 12, 13, 14]
    first, *resumes = server.requests
    assert first.url.params["tail"] == "5" and "last-event-id" not in first.headers
    for request, cursor in zip(resumes, ("12", "13")):
        assert request.headers["last-event-id"] == cursor
        assert "tail" not in request.url.params and request.url.params["level"] == "warn"
    assert "connection lost (ReadError: reset by peer); resuming after seq 13" in (
        capsys.readouterr().err
    )


async def test_a_drop_before_the_first_record_resumes_from_the_connected_cursor():
    server = ScriptedServer([opening(41)], [opening(41), log_frame(42)])
    assert await run_follow(server, count=1) == [42]
    assert server.requests[1].headers["last-event-id"] == "41"


async def test_an_expired_static_token_ends_with_a_message():
    server = ScriptedServer([opening(1), sse_frame(event="auth-expired", data="{}")])
    with pytest.raises(TailError, match="the token expired; give a fresh --token"):
        await run_follow(server)


async def test_an_expired_dev_token_is_replaced_and_the_stream_resumes():
    server = ScriptedServer(
        [opening(1), log_frame(2), sse_frame(event="auth-expired", data="{}")],
        [opening(2), log_frame(3)],
    )
    seqs = await run_follow(server, count=2, tokens=TokenSource(dev_user="user123"))
    assert seqs == [2, 3] and server.requests[1].headers["last-event-id"] == "2"
    assert server.requests[1].headers["authorization"].startswith("Bearer ey")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            403,
            {"error": "forbidden", "message": "user 'user123' may not read logs:etl:ws456"},
            "403 forbidden: user 'user123' may not read logs:etl:ws456",
        ),
        (
            401,
            {"error": "unauthenticated", "message": "the user token is not valid"},
            "401 unauthenticated: the user token is not valid",
        ),
        (
            400,
            {"error": "invalid_request", "message": "tail 'x' must be an integer"},
            "400 invalid_request: tail 'x' must be an integer",
        ),
        (
            429,
            {"error": "rate_limited", "message": "too many streams"},
            "429 rate_limited: too many streams",
        ),
    ],
)
async def test_a_4xx_ends_with_the_status_and_the_servers_words(status, body, expected):
    server = ScriptedServer(httpx.Response(status, json=body))
    with pytest.raises(TailError) as refused:
        await run_follow(server)
    assert refused.value.message == expected and refused.value.exit_code == 1


async def test_a_4xx_without_a_json_body_still_says_what_came_back():
    server = ScriptedServer(httpx.Response(404, text="no such page"))
    with pytest.raises(TailError, match="404 not found: no such page"):
        await run_follow(server)


async def test_a_503_or_502_is_waited_out_and_retried(capsys):
    server = ScriptedServer(
        httpx.Response(
            503,
            json={"error": "broker_unavailable", "message": "down"},
            headers={"Retry-After": "0"},
        ),
        httpx.Response(
            502,
            json={"error": "bad_gateway", "message": "no gateway"},
            headers={"Retry-After": "0"},
        ),
        [opening(5), log_frame(6)],
    )
    assert await run_follow(server, count=1) == [6]
    assert "503 broker_unavailable: down; retrying" in capsys.readouterr().err


async def test_an_unreachable_url_on_the_first_connection_ends_the_command():
    server = ScriptedServer(httpx.ConnectError("connection refused"))
    with pytest.raises(TailError, match="cannot reach http://gw/api/logs/stream: ConnectError"):
        await run_follow(server)


async def test_a_gap_is_reported_on_stderr(capsys):
    server = ScriptedServer(
        [opening(3), sse_frame(event="gap", data='{"from": 4, "to": 9}'), log_frame(10)]
    )
    assert await run_follow(server, count=1) == [10]
    assert "records 4-9 of logs:etl:workspace123:workflow456 aged out" in capsys.readouterr().err
