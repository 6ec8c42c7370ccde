"""The shipping recipes of docs/shipping.md, each proved against a real ingest process.

None of the shippers can run here (no Docker, no binaries), so each test sends EXACTLY the
request the tool sends, as read in its source (cited in each docstring, at the commit the
recipe was written against): method, path, every header (Content-Type, Content-Encoding, the
credential's form, User-Agent, Host, Content-Length) and the body's format and framing. The
URL path, the credential and the encoding settings are taken from the example configuration
under examples/shipping/ (which docs/shipping.md shows), so a config that drifts from what
ingest takes fails here. Then the LOGS stream is read back: what the recipe promises is stored,
and a wrong token is a 401, which the tool does not retry.

Sources read (commits of the mirrors the recipes were written from):

- Vector: vectordotdev/vector c3445d42d2799eb9afe102b71cba7ae96a80942b
- Fluent Bit: fluent/fluent-bit d55459d492c5c019c0f7dc24db42e69ef47a5437
- OpenTelemetry Collector: open-telemetry/opentelemetry-collector
  934999fbab274d10cbf18704b4594a6fb2049887
- Grafana Alloy: grafana/alloy 66ebea856dffb242f921775e9552a133f60dc5c1
"""

from __future__ import annotations

import base64
import gzip
import http.client
import importlib.util
import json
import logging
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import cramjam
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import (
    LogRecord,
    ResourceLogs,
    ScopeLogs,
    SeverityNumber,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor

from logstream.services.ingest.loki import push_request_class
from tests.support.jetstream import stored
from tests.support.processes import ServiceProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shipping"
TOKEN = "l5-etl-token"  # a dev-mode service token that may publish to logs:etl:*
WRONG_TOKEN = "l5-not-a-token"
# 2026-05-28T20:26:40.123456789Z, as the tools carry an event's time
EVENT_NS = 1_780_000_000_123_456_789
EVENT_TIME = "2026-05-28T20:26:40.123456Z"  # as ingest stores it (microseconds)


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir):
    service = ServiceProcess("ingest", nats_url=nats_server.url, log_dir=log_dir).start()
    yield service
    service.stop()


@pytest.fixture
def js(nc):
    return nc.jetstream()


# --- the wire ---------------------------------------------------------------------------------


@dataclass
class Request:
    """One HTTP request, header by header as the tool writes it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(ingest_url: str, request: Request) -> Answer:
    """Writes exactly ``request``: http.client adds no header of its own here (no Host,
    Accept-Encoding or Content-Length unless the request has them)."""
    where = urlsplit(ingest_url)
    connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
    try:
        connection.putrequest(
            request.method, request.target, skip_host=True, skip_accept_encoding=True
        )
        for name, value in request.headers:
            connection.putheader(name, value)
        connection.endheaders(request.body)
        response = connection.getresponse()
        return Answer(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def host_of(ingest_url: str) -> str:
    return urlsplit(ingest_url).netloc


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def compact(value: Any, **kw: Any) -> str:
    """JSON as serde_json, Fluent Bit and Go write it: no spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, **kw)


def subject(channel: str) -> str:
    return channel.replace(":", ".")


def unique(channel: str, unique_id: str) -> str:
    """The recipe's channel, its last segment made this test's own."""
    return f"{channel}-{unique_id}"


async def records_in(js, channel: str) -> list[dict[str, Any]]:
    return [record for _, _, record in await stored(js, subject(channel))]


# --- what each tool does with an answer, transcribed from its source ---------------------------


def vector_retries(status: int) -> bool:
    """src/sinks/util/http.rs RetryStrategy::retry_action (Default, l. 650-662): 408, 429 and
    5xx other than 501; anything else is dropped."""
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


def fluent_bit_http_retries(status: int) -> bool:
    """plugins/out_http/http.c http_request (l. 315-338): 200-205 is done; 4xx other than 408
    and 429 is FLB_ERROR ("chunk will not be retried"); the rest FLB_RETRY."""
    if 200 <= status <= 205:
        return False
    return not (400 <= status < 500 and status not in (408, 429))


def fluent_bit_loki_retries(status: int) -> bool:
    """plugins/out_loki/loki.c send_loki_payload (l. 2020-2063): only 400 is FLB_ERROR; every
    other status outside 200-205 (401 and 415 included) is FLB_RETRY, up to Retry_Limit."""
    return not (200 <= status <= 205) and status != 400


def otlphttp_retries(status: int) -> bool:
    """exporter/otlphttpexporter/otlp.go isRetryableStatusCode (l. 264): 429, 502, 503, 504;
    any other error status is consumererror.NewPermanent (l. 234)."""
    return status in (429, 502, 503, 504)


def alloy_retries(status: int) -> bool:
    """internal/component/common/loki/client/shards.go sendBatch (l. 448): only 429 and 5xx
    (and connection errors) are retried; the batch is dropped otherwise."""
    return status == 429 or status // 100 == 5


@pytest.mark.parametrize(
    "retries",
    [vector_retries, fluent_bit_http_retries, otlphttp_retries, alloy_retries],
    ids=["vector", "fluent-bit-http", "otelcol-otlphttp", "alloy-loki-write"],
)
def test_ingests_answers_mean_to_each_tool_what_the_docs_say(retries):
    """401 (wrong token), 400, 403, 413 and 415 are dropped, not retried for ever; 429 and 503
    (ingest's answers to retry) are retried."""
    assert not any(retries(status) for status in (400, 401, 403, 413, 415))
    assert retries(429) and retries(503)


def test_fluent_bits_loki_output_retries_a_401_until_its_retry_limit():
    """Unlike the others, Fluent Bit's loki output treats only 400 as permanent: a wrong token
    (401) or a 415 is retried, so the recipe sets Retry_Limit (docs/shipping.md says why)."""
    assert fluent_bit_loki_retries(401) and fluent_bit_loki_retries(415)
    assert not fluent_bit_loki_retries(400)
    assert fluent_bit_loki_retries(429) and fluent_bit_loki_retries(503)
    output = fluent_bit_output(EXAMPLES / "fluent-bit-loki.conf")
    assert int(output["retry_limit"][0]) > 0


# --- Vector -----------------------------------------------------------------------------------


def vector_sink() -> dict[str, Any]:
    config = tomllib.loads((EXAMPLES / "vector.toml").read_text())
    sink = config["sinks"]["logstream"]
    assert sink["type"] == "http" and sink["method"] == "post"
    assert sink["inputs"] == ["logstream_records"]
    return sink


def vector_remap() -> str:
    config = tomllib.loads((EXAMPLES / "vector.toml").read_text())
    transform = config["transforms"]["logstream_records"]
    assert transform["type"] == "remap"
    return str(transform["source"])


def vector_request(ingest_url: str, records: list[dict[str, Any]], token: str) -> Request:
    """What Vector's ``http`` sink sends for the sink in examples/shipping/vector.toml.

    - src/sinks/http/config.rs l. 397: codec json with newline_delimited framing is
      ``Content-Type: application/x-ndjson`` (without framing it would be a JSON array,
      application/json, which ingest takes too); l. 407: ``Content-Encoding`` from
      ``compression`` (gzip).
    - src/sinks/http/encoder.rs l. 78-82: one JSON object per line, and the last newline removed;
      the json serializer writes an event's fields in key order, compact.
    - src/sinks/http/service.rs l. 60-101 and src/http.rs l. 328-341, 468: content-type and
      content-encoding, then ``auth.strategy = "bearer"`` as ``authorization: Bearer <token>``,
      ``user-agent: Vector/<version>`` and ``accept-encoding: identity``. hyper writes header
      names in lower case.
    """
    sink = vector_sink()
    assert sink["encoding"] == {"codec": "json"}
    assert sink["framing"] == {"method": "newline_delimited"}
    assert sink["compression"] == "gzip"
    assert sink["auth"] == {"strategy": "bearer", "token": "${LOGSTREAM_TOKEN}"}
    assert sink["batch"]["max_events"] <= 1000 and sink["batch"]["max_bytes"] <= 1024 * 1024
    body = gzip.compress(
        "\n".join(compact(record, sort_keys=True) for record in records).encode(), mtime=0
    )
    return Request(
        "POST",
        urlsplit(sink["uri"]).path,
        [
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
            ("authorization", f"Bearer {token}"),
            ("user-agent", "Vector/0.50.0 (x86_64-unknown-linux-gnu)"),
            ("accept-encoding", "identity"),
            ("host", host_of(ingest_url)),
            ("content-length", str(len(body))),
        ],
        body,
    )


def vector_records(channel: str) -> list[dict[str, Any]]:
    """What the remap in vector.toml makes of two lines of /var/log/etl/import.log read by the
    ``file`` source on host etl-1: a JSON line, and a plain one."""
    path = "/var/log/etl/import.log"
    return [
        {
            "channel": channel,
            "message": "rows skipped",
            "level": "warn",  # "WARN", lower-cased
            "fields": {"rows": 3, "table": "orders", "host": "etl-1", "file": path},
        },
        {
            "channel": channel,
            "message": "import done",  # not JSON: the whole line
            "level": "info",
            "fields": {"host": "etl-1", "file": path},
        },
    ]


def test_vectors_remap_makes_only_record_keys():
    remap = vector_remap()
    root = remap[remap.index(". = {") :]
    assert re.findall(r'^  "(\w+)":', root, re.MULTILINE) == [
        "channel",
        "message",
        "level",
        "fields",
    ]


async def test_vector_http_sink_stores_its_batch(ingest, js, unique_id):
    channel = unique(re.findall(r'"channel": "([^"]+)"', vector_remap())[0], unique_id)
    answer = send(ingest.url, vector_request(ingest.url, vector_records(channel), TOKEN))
    assert answer.status == 202, answer.body
    assert json.loads(answer.body)["accepted"] == 2
    got = await records_in(js, channel)
    assert [(r["message"], r["level"]) for r in got] == [
        ("rows skipped", "warn"),
        ("import done", "info"),
    ]
    assert got[0]["fields"] == {
        "file": "/var/log/etl/import.log",
        "host": "etl-1",
        "rows": 3,
        "table": "orders",
    }
    assert all(r["publisher"] == TOKEN and r["source"] is None for r in got)


async def test_vector_with_a_wrong_token_gets_a_401_and_nothing_is_stored(ingest, js, unique_id):
    channel = unique("logs:etl:workspace123:nightly-import", unique_id)
    answer = send(ingest.url, vector_request(ingest.url, vector_records(channel), WRONG_TOKEN))
    assert answer.status == 401 and not vector_retries(answer.status)
    assert await records_in(js, channel) == []


# --- Fluent Bit -------------------------------------------------------------------------------


def fluent_bit_sections(path: Path) -> list[tuple[str, dict[str, list[str]]]]:
    """A classic Fluent Bit config: [SECTION]s of ``Key value`` lines (keys case-insensitive;
    a key given twice, such as Header, keeps both)."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].upper(), {}))
            continue
        key, _, value = line.partition(" ")
        sections[-1][1].setdefault(key.lower(), []).append(value.strip())
    return sections


def fluent_bit_output(path: Path) -> dict[str, list[str]]:
    (output,) = [values for name, values in fluent_bit_sections(path) if name == "OUTPUT"]
    return output


def with_token(value: str, token: str) -> str:
    return value.replace("${LOGSTREAM_TOKEN}", token)


def fluent_bit_http_request(ingest_url: str, records: list[dict[str, Any]], token: str) -> Request:
    """What Fluent Bit's ``http`` output sends for examples/shipping/fluent-bit-http.conf.

    - plugins/out_http/http.c l. 230-235: ``Format json_lines`` is
      ``Content-Type: application/x-ndjson``; l. 252-256: ``Compress gzip`` adds
      ``Content-Encoding: gzip``; l. 270: ``User-Agent: Fluent-Bit``; l. 272-281: each
      ``Header`` line, split at its first space, as a header of its own.
    - src/flb_pack.c flb_pack_msgpack_to_json_format (l. 1320-1580): each record a compact JSON
      object followed by ``\\n``, the date key first (``Json_date_key``; ``false`` leaves it
      out, plugins/out_http/http_conf.c l. 257-265), formatted by ``Json_date_format
      iso8601`` as ``%Y-%m-%dT%H:%M:%S.<microseconds>Z`` (l. 1414); then the record's keys.
    - src/flb_http_client.c add_host_and_content_length (l. 807-922): Host and Content-Length
      first.
    """
    output = fluent_bit_output(EXAMPLES / "fluent-bit-http.conf")
    assert output["name"] == ["http"]
    assert output["format"] == ["json_lines"] and output["compress"] == ["gzip"]
    assert output["json_date_key"] == ["timestamp"] and output["json_date_format"] == ["iso8601"]
    custom = [with_token(header, token).split(" ", 1) for header in output["header"]]
    assert custom == [["Authorization", f"Bearer {token}"]]
    lines = [
        compact({"timestamp": EVENT_TIME, **record}) + "\n"  # the date key first
        for record in records
    ]
    body = gzip.compress("".join(lines).encode(), mtime=0)
    return Request(
        "POST",
        output["uri"][0],
        [
            ("Host", host_of(ingest_url)),
            ("Content-Length", str(len(body))),
            ("Content-Type", "application/x-ndjson"),
            ("Content-Encoding", "gzip"),
            ("User-Agent", "Fluent-Bit"),
            *((name, value) for name, value in custom),
        ],
        body,
    )


def fluent_bit_lua() -> str:
    sections = fluent_bit_sections(EXAMPLES / "fluent-bit-http.conf")
    (lua_filter,) = [v for name, v in sections if name == "FILTER" and v["name"] == ["lua"]]
    assert lua_filter["call"] == ["to_logstream"]
    return (EXAMPLES / lua_filter["script"][0]).read_text()


def test_the_fluent_bit_lua_filter_makes_only_record_keys():
    """The table the filter returns (code 2: replaced, time kept) has channel, message, level
    and fields; the output adds timestamp. An empty Lua table is packed as a map
    (src/flb_lua.c flb_lua_arraylength: 0 -> lua_tomap_mpack), so ``fields`` is ``{}``."""
    script = fluent_bit_lua()
    returned = script[script.index("return 2, timestamp, {") :]
    returned = returned[: returned.index("}") + 1]
    assert re.findall(r"^\s+(\w+) = ", returned, re.MULTILINE) == [
        "channel",
        "message",
        "level",
        "fields",
    ]


def fluent_bit_records(channel: str) -> list[dict[str, Any]]:
    """What the lua filter makes of two tail records parsed as JSON."""
    return [
        {"channel": channel, "message": "rows skipped", "level": "warn", "fields": {"rows": 3}},
        {"channel": channel, "message": "import done", "level": "info", "fields": {}},
    ]


async def test_fluent_bit_http_output_stores_its_json_lines(ingest, js, unique_id):
    channel = unique(re.findall(r'CHANNEL = "([^"]+)"', fluent_bit_lua())[0], unique_id)
    request = fluent_bit_http_request(ingest.url, fluent_bit_records(channel), TOKEN)
    answer = send(ingest.url, request)
    assert answer.status == 202, answer.body
    got = await records_in(js, channel)
    assert [(r["message"], r["level"], r["fields"]) for r in got] == [
        ("rows skipped", "warn", {"rows": 3}),
        ("import done", "info", {}),
    ]
    assert all(r["timestamp"] == EVENT_TIME for r in got)


async def test_fluent_bit_http_output_with_the_default_date_key_is_refused(ingest, js, unique_id):
    """Without ``Json_date_key`` the output adds ``"date": <epoch seconds as a float>``
    (http.c config map: json_date_key defaults to "date", json_date_format to double), a key
    ingest refuses: 400 for the whole batch, which the output drops. Hence the recipe's
    ``Json_date_key timestamp`` (or ``false``)."""
    channel = unique("logs:etl:workspace123:nightly-import", unique_id)
    line = compact({"date": EVENT_NS / 1e9, "channel": channel, "message": "m"}) + "\n"
    body = gzip.compress(line.encode(), mtime=0)
    request = fluent_bit_http_request(ingest.url, [], TOKEN)
    request.body = body
    request.headers[1] = ("Content-Length", str(len(body)))
    answer = send(ingest.url, request)
    assert answer.status == 400 and not fluent_bit_http_retries(answer.status)
    assert "date" in answer.body.decode()
    assert await records_in(js, channel) == []


async def test_fluent_bit_http_output_with_a_wrong_token_gets_a_401(ingest, js, unique_id):
    channel = unique("logs:etl:workspace123:nightly-import", unique_id)
    request = fluent_bit_http_request(ingest.url, fluent_bit_records(channel), WRONG_TOKEN)
    answer = send(ingest.url, request)
    assert answer.status == 401 and not fluent_bit_http_retries(answer.status)
    assert await records_in(js, channel) == []


def fluent_bit_loki_request(
    ingest_url: str, entries: list[dict[str, Any]], token: str, channel: str
) -> Request:
    """What Fluent Bit's ``loki`` output sends for examples/shipping/fluent-bit-loki.conf.

    - plugins/out_loki/loki.c send_loki_payload (l. 1901-1997): ``User-Agent: Fluent-Bit``;
      ``Http_User``/``Http_Passwd`` as HTTP Basic (l. 1970-1971); ``Content-Type:
      application/json`` always (l. 1988-1990); ``Compress gzip`` adds ``Content-Encoding:
      gzip`` (l. 1992-1993); after Host and Content-Length (src/flb_http_client.c).
    - loki.c flb_loki_format (l. 1630-1800): ``{"streams": [...]}``; with a record accessor
      among the labels (``Label_keys $level``) one stream per record, its labels the static
      ``Labels`` then the record's; the time as a string of nanoseconds (pack_timestamp,
      l. 1256); the line the record without its label keys (l. 259-279 add them to
      remove_keys), and with ``Drop_single_key raw`` a record left with one string value is
      that string (l. 1467-1486), otherwise compact JSON.

    ``channel`` stands for the ``channel=`` of the config's ``Labels`` (each test its own).
    """
    output = fluent_bit_output(EXAMPLES / "fluent-bit-loki.conf")
    assert output["name"] == ["loki"] and output["compress"] == ["gzip"]
    assert output["label_keys"] == ["$level"] and output["drop_single_key"] == ["raw"]
    user, password = output["http_user"][0], with_token(output["http_passwd"][0], token)
    static = dict(pair.strip().split("=", 1) for pair in output["labels"][0].split(","))
    assert list(static) == ["job", "channel"]
    static["channel"] = channel
    streams = []
    for entry in entries:
        line = dict(entry["record"])
        labels = {**static, **({"level": line.pop("level")} if "level" in line else {})}
        if set(line) == {"message"}:
            text = line["message"]
        else:
            text = compact(line)
        streams.append({"stream": labels, "values": [[str(entry["ns"]), text]]})
    body = gzip.compress(compact({"streams": streams}).encode(), mtime=0)
    return Request(
        "POST",
        output["uri"][0],
        [
            ("Host", host_of(ingest_url)),
            ("Content-Length", str(len(body))),
            ("User-Agent", "Fluent-Bit"),
            ("Authorization", basic(user, password)),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        body,
    )


def fluent_bit_loki_channel() -> str:
    output = fluent_bit_output(EXAMPLES / "fluent-bit-loki.conf")
    static = dict(pair.strip().split("=", 1) for pair in output["labels"][0].split(","))
    return static["channel"]


def fluent_bit_loki_entries() -> list[dict[str, Any]]:
    """Two records after the modify filter (msg renamed message, level added when missing)."""
    return [
        {"ns": EVENT_NS, "record": {"message": "rows skipped", "level": "warn"}},
        {"ns": EVENT_NS + 1000, "record": {"message": "import done", "level": "info", "rows": 3}},
    ]


async def test_fluent_bit_loki_output_stores_its_push(ingest, js, unique_id):
    channel = unique(fluent_bit_loki_channel(), unique_id)
    request = fluent_bit_loki_request(ingest.url, fluent_bit_loki_entries(), TOKEN, channel)
    answer = send(ingest.url, request)
    assert answer.status == 204, answer.body
    got = await records_in(js, channel)
    assert [(r["message"], r["level"]) for r in got] == [
        ("rows skipped", "warn"),
        ('{"message":"import done","rows":3}', "info"),
    ]
    assert all(r["source"] == "nightly-import" and r["fields"] is None for r in got)
    assert got[0]["timestamp"] == EVENT_TIME


async def test_fluent_bit_loki_output_with_a_wrong_token_gets_a_401(ingest, js, unique_id):
    channel = unique(fluent_bit_loki_channel(), unique_id)
    request = fluent_bit_loki_request(ingest.url, fluent_bit_loki_entries(), WRONG_TOKEN, channel)
    answer = send(ingest.url, request)
    assert answer.status == 401
    assert fluent_bit_loki_retries(answer.status)  # retried up to Retry_Limit, then dropped
    assert await records_in(js, channel) == []


# --- OpenTelemetry Collector ------------------------------------------------------------------


def otelcol_config() -> dict[str, Any]:
    config = yaml.safe_load((EXAMPLES / "otelcol.yaml").read_text())
    assert isinstance(config, dict)
    return config


def otelcol_channel() -> str:
    attributes = otelcol_config()["processors"]["resource"]["attributes"]
    (channel,) = [a["value"] for a in attributes if a["key"] == "logstream.channel"]
    return str(channel)


def _kv(key: str, value: str | float) -> KeyValue:
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otelcol_export(channel: str) -> ExportLogsServiceRequest:
    """What the pipeline in otelcol.yaml exports for two lines of import.log: the filelog
    receiver (body from ``msg``, severity from ``level``, ``log.file.name``, JSON numbers as
    doubles, the time it read them as observed_time_unix_nano), then the resource processor's
    ``logstream.channel`` and ``service.name``."""
    resource = Resource(
        attributes=[_kv("logstream.channel", channel), _kv("service.name", "nightly-import")]
    )
    records = [
        LogRecord(
            observed_time_unix_nano=EVENT_NS,
            severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,  # 13
            severity_text="WARN",
            body=AnyValue(string_value="rows skipped"),
            attributes=[_kv("log.file.name", "import.log"), _kv("rows", 3.0)],
        ),
        LogRecord(
            observed_time_unix_nano=EVENT_NS,
            body=AnyValue(string_value="import done"),
            attributes=[_kv("log.file.name", "import.log")],
        ),
    ]
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=resource,
                scope_logs=[ScopeLogs(scope=InstrumentationScope(), log_records=records)],
            )
        ]
    )


def otelcol_request(ingest_url: str, export: ExportLogsServiceRequest, token: str) -> Request:
    """What the Collector's ``otlphttp`` exporter sends for examples/shipping/otelcol.yaml.

    - exporter/otlphttpexporter/factory.go l. 47, 54: gzip and protobuf are the defaults;
      composeSignalURL: ``logs_endpoint`` is used as it is.
    - exporter/otlphttpexporter/otlp.go export (l. 178-192): POST, ``Content-Type:
      application/x-protobuf`` for encoding proto, ``User-Agent: <build description>/<version>
      (<os>/<arch>)``.
    - config/confighttp/client.go headerRoundTripper (l. 289-305): the ``headers`` map;
      config/confighttp/compression.go (l. 203-229): the body gzipped and
      ``Content-Encoding: gzip`` added. Go's transport writes Host, User-Agent and
      Content-Length first, the other headers sorted, then ``Accept-Encoding: gzip``.
    """
    exporter = otelcol_config()["exporters"]["otlphttp/logstream"]
    assert exporter["encoding"] == "proto" and exporter["compression"] == "gzip"
    authorization = exporter["headers"]["Authorization"].replace("${env:LOGSTREAM_TOKEN}", token)
    assert authorization == f"Bearer {token}"
    body = gzip.compress(export.SerializeToString(), mtime=0)
    return Request(
        "POST",
        urlsplit(exporter["logs_endpoint"]).path,
        [
            ("Host", host_of(ingest_url)),
            ("User-Agent", "OpenTelemetry Collector Contrib/0.133.0 (linux/amd64)"),
            ("Content-Length", str(len(body))),
            ("Authorization", authorization),
            ("Content-Encoding", "gzip"),
            ("Content-Type", "application/x-protobuf"),
            ("Accept-Encoding", "gzip"),
        ],
        body,
    )


async def test_otel_collector_otlphttp_exporter_stores_its_export(ingest, js, unique_id):
    channel = unique(otelcol_channel(), unique_id)
    answer = send(ingest.url, otelcol_request(ingest.url, otelcol_export(channel), TOKEN))
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("application/x-protobuf")
    assert ExportLogsServiceResponse.FromString(answer.body) == ExportLogsServiceResponse()
    got = await records_in(js, channel)
    assert [(r["message"], r["level"]) for r in got] == [
        ("rows skipped", "warn"),
        ("import done", "info"),
    ]
    assert all(r["source"] == "nightly-import" and r["timestamp"] == EVENT_TIME for r in got)
    assert got[0]["fields"] == {"log.file.name": "import.log", "rows": 3}
    assert got[1]["fields"] == {"log.file.name": "import.log"}


async def test_otel_collector_with_a_wrong_token_gets_a_401(ingest, js, unique_id):
    channel = unique(otelcol_channel(), unique_id)
    answer = send(ingest.url, otelcol_request(ingest.url, otelcol_export(channel), WRONG_TOKEN))
    assert answer.status == 401 and not otlphttp_retries(answer.status)
    assert await records_in(js, channel) == []


# --- Grafana Alloy ----------------------------------------------------------------------------


@dataclass
class AlloyWrite:
    url: str
    username: str
    password_env: str
    channel: str
    job: str


def alloy_config() -> AlloyWrite:
    """The loki.write endpoint and the labels of examples/shipping/alloy.alloy."""
    text = (EXAMPLES / "alloy.alloy").read_text()
    write = text[text.index('loki.write "logstream"') :]

    def one(pattern: str, within: str) -> str:
        (found,) = re.findall(pattern, within)
        return str(found)

    return AlloyWrite(
        url=one(r'url\s*=\s*"([^"]+)"', write),
        username=one(r'username\s*=\s*"([^"]+)"', write),
        password_env=one(r'password\s*=\s*sys\.env\("([^"]+)"\)', write),
        channel=one(r'"channel"\s*=\s*"([^"]+)"', text),
        job=one(r'"job"\s*=\s*"([^"]+)"', text),
    )


def alloy_push(channel: str, job: str) -> bytes:
    """What loki.write pushes for two lines of import.log after the loki.process stages in
    alloy.alloy: labels channel, filename (loki.source.file's), job and level, sorted and
    written ``{a="x", b="y"}`` (internal/component/common/loki/client/batch.go
    labelsMapToString, l. 167-212); the PushRequest protobuf, snappy's block format
    (encode.go l. 14-28)."""
    push = push_request_class()()
    for offset, (level, line) in enumerate([("warn", "rows skipped"), ("info", "import done")]):
        labels = {"channel": channel, "filename": "/var/log/etl/import.log", "job": job}
        labels["level"] = level
        text = ", ".join(f"{name}={json.dumps(labels[name])}" for name in sorted(labels))
        stream = push.streams.add(labels="{" + text + "}")
        entry = stream.entries.add(line=line)
        entry.timestamp.FromNanoseconds(EVENT_NS + offset * 1000)
    return bytes(cramjam.snappy.compress_raw(push.SerializeToString()))


def alloy_request(ingest_url: str, body: bytes, token: str, *, since_1_13: bool) -> Request:
    """What Alloy's ``loki.write`` sends (internal/component/common/loki/client/shards.go send,
    l. 479-505): POST to the endpoint ``url``, ``User-Agent: Alloy/<version> (<os>)``
    (internal/useragent), ``Content-Type: application/x-protobuf``, ``basic_auth`` as HTTP
    Basic (Prometheus' HTTP client config). Since v1.13.0 (commit ffd2bea7de, "Set
    content-encoding header in loki.write", #5346) also ``Content-Encoding: snappy``
    (l. 477, 491)."""
    write = alloy_config()
    assert write.password_env == "LOGSTREAM_TOKEN"
    headers = [
        ("Host", host_of(ingest_url)),
        ("User-Agent", f"Alloy/{'v1.19.0' if since_1_13 else 'v1.12.0'} (linux)"),
        ("Content-Length", str(len(body))),
        ("Authorization", basic(write.username, token)),
    ]
    if since_1_13:
        headers.append(("Content-Encoding", "snappy"))
    headers += [("Content-Type", "application/x-protobuf"), ("Accept-Encoding", "gzip")]
    return Request("POST", urlsplit(write.url).path, headers, body)


async def _alloy_push_is_stored(ingest, js, unique_id: str, *, since_1_13: bool) -> None:
    write = alloy_config()
    channel = unique(write.channel, unique_id)
    request = alloy_request(
        ingest.url, alloy_push(channel, write.job), TOKEN, since_1_13=since_1_13
    )
    answer = send(ingest.url, request)
    assert answer.status == 204, (answer.status, answer.body)
    got = await records_in(js, channel)
    assert [(r["message"], r["level"]) for r in got] == [
        ("rows skipped", "warn"),
        ("import done", "info"),
    ]
    assert all(r["source"] == "nightly-import" for r in got)
    assert got[0]["fields"] == {"filename": "/var/log/etl/import.log"}
    assert got[0]["timestamp"] == EVENT_TIME


async def test_alloy_loki_write_before_1_13_stores_its_push(ingest, js, unique_id):
    await _alloy_push_is_stored(ingest, js, unique_id, since_1_13=False)


async def test_alloy_loki_write_since_1_13_stores_its_push(ingest, js, unique_id):
    """Grafana Alloy >= v1.13.0 also says ``Content-Encoding: snappy`` (grafana/alloy
    internal/component/common/loki/client/shards.go l. 491): for a protobuf push that is the
    body ingest reads, not a coding on top of it."""
    await _alloy_push_is_stored(ingest, js, unique_id, since_1_13=True)


async def test_snappy_as_a_content_encoding_of_a_json_push_is_a_415(ingest):
    """Only a protobuf push is a snappy block; Loki refuses snappy on JSON too."""
    request = Request(
        "POST",
        "/loki/api/v1/push",
        [
            ("Host", host_of(ingest.url)),
            ("Authorization", f"Bearer {TOKEN}"),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "snappy"),
            ("Content-Length", "2"),
        ],
        b"{}",
    )
    answer = send(ingest.url, request)
    assert answer.status == 415
    assert "snappy" in json.loads(answer.body)["message"]


@pytest.mark.parametrize("since_1_13", [False, True], ids=["before-1.13", "since-1.13"])
async def test_alloy_with_a_wrong_token_gets_a_401(ingest, js, unique_id, since_1_13):
    write = alloy_config()
    channel = unique(write.channel, unique_id)
    body = alloy_push(channel, write.job)
    answer = send(ingest.url, alloy_request(ingest.url, body, WRONG_TOKEN, since_1_13=since_1_13))
    assert answer.status == 401 and not alloy_retries(answer.status)
    assert await records_in(js, channel) == []


# --- The OpenTelemetry Python SDK --------------------------------------------------------------


def otel_sdk_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otel_sdk_example", EXAMPLES / "otel_sdk.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
async def test_the_otel_sdk_example_stores_python_logging(ingest, js, unique_id):
    """examples/shipping/otel_sdk.py as docs/shipping.md shows it; the SDK's request is the
    library's own (tests/integration/test_ingest_otlp.py covers its variants)."""
    channel = f"logs:etl:workspace123:sdk-{unique_id}"
    logger = logging.getLogger(f"shipping-{unique_id}")
    logger.propagate = False
    provider = otel_sdk_example().logstream_logging(
        ingest.url, TOKEN, channel=channel, service_name="nightly-import", logger=logger
    )
    logger.warning("rows skipped", extra={"rows": 3})
    logger.info("import done")
    assert provider.force_flush(10_000)
    provider.shutdown()
    got = await records_in(js, channel)
    assert [(r["message"], r["level"]) for r in got] == [
        ("rows skipped", "warn"),
        ("import done", "info"),
    ]
    assert got[0]["source"] == "nightly-import" and got[0]["fields"]["rows"] == 3


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_the_otel_sdk_with_a_wrong_token_fails_the_export_at_once(ingest, unique_id):
    """The SDK retries only 429, 502, 503 and 504 (opentelemetry/exporter/otlp/common/http.py
    _RETRYABLE_STATUS_CODES): a 401 fails the export at once, without retrying."""
    example = otel_sdk_example()
    results: list[LogRecordExportResult] = []

    class Recorded(SimpleLogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            results.append(self._exporter.export([log_record]))

    exporter = example.logstream_exporter(ingest.url, WRONG_TOKEN)
    provider = LoggerProvider()
    provider.add_log_record_processor(Recorded(exporter))
    logger = logging.getLogger(f"shipping-wrong-{unique_id}")
    logger.propagate = False
    logger.addHandler(example.LoggingHandler(level=logging.INFO, logger_provider=provider))
    started = time.monotonic()
    logger.warning("never stored")
    elapsed = time.monotonic() - started
    provider.shutdown()
    assert results == [LogRecordExportResult.FAILURE]
    assert elapsed < 5  # no backoff: the SDK's first retry would wait about a second


# --- the document -----------------------------------------------------------------------------


def test_docs_shipping_shows_the_example_files_as_they_are():
    """Each ``<!-- include: examples/shipping/... -->`` block of docs/shipping.md is that file,
    verbatim: the configs the tests above read are the ones the reader copies."""
    doc = (EXAMPLES.parents[1] / "docs" / "shipping.md").read_text()
    blocks = re.findall(r"<!-- include: (\S+) -->\n```\w*\n(.*?)```\n", doc, re.DOTALL)
    shown = {Path(path).name for path, _ in blocks}
    assert shown == {path.name for path in EXAMPLES.iterdir() if path.is_file()}
    for path, text in blocks:
        assert text == (EXAMPLES.parents[1] / path).read_text(), path
