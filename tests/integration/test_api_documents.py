"""The API documents the services serve (docs/reference/stream.md#service-endpoints): valid, complete, and true.

Read from the suite's dev-mode ``stack`` (real processes): each OpenAPI document is valid
OpenAPI 3.1 (schemathesis' validator, and openapi-spec-validator where installed), every
``$ref`` resolves, and each declares the inputs and answers of its operations. "True" is
checked by sending real requests and reading real answers (HTTP and NATS) against the
documented schemas. The AsyncAPI document of ``ingest.logs`` is served by ingest.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import nats
import pytest
import schemathesis
import yaml
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

from logstream.shared.nats_link import settle
from logstream.shared.nats_names import INGEST_SUBJECT, REJECTED_SUBJECT

PUBLISH = "/api/logs/publish"
STREAM = "/api/logs/stream"
ETL = {"Authorization": "Bearer l5-etl-token"}
SERVICES = ("ingest", "gateway", "proxy")
REPLY_TIMEOUT_S = 10


def _get_json(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    assert "json" in response.headers["content-type"]  # application/vnd.oai.openapi+json
    return response.json()


@pytest.fixture(scope="module")
def documents(stack) -> dict[str, dict[str, Any]]:
    return {name: _get_json(getattr(stack, name).url + "/schema/openapi.json") for name in SERVICES}


@pytest.fixture(scope="module")
def asyncapi(stack) -> dict[str, Any]:
    return _get_json(stack.ingest.url + "/schema/asyncapi.json")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    """What ``ref`` points at, following a reference to a reference."""
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return _resolve(document, node["$ref"])
    return node


def _validator(document: dict[str, Any], name: str) -> jsonschema_rs.Draft202012Validator:
    """A validator of the component schema ``name``, its references resolved in ``document``."""
    return jsonschema_rs.Draft202012Validator(
        {"components": document["components"], "$ref": f"#/components/schemas/{name}"}
    )


def _schema_name(media: dict[str, Any]) -> str:
    return media["schema"]["$ref"].rsplit("/", 1)[1]


def _response_validator(document, path: str, method: str, status: int):
    response = document["paths"][path][method]["responses"][str(status)]
    return _validator(document, _schema_name(response["content"]["application/json"]))


def _parameters(operation: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["in"], p["name"]): p for p in operation.get("parameters", [])}


# -- every document -----------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_openapi_document_is_valid_openapi_3_1(documents, service):
    document = documents[service]
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()
    try:
        from openapi_spec_validator import validate
    except ImportError:  # not a dependency; schemathesis' check above is the one always run
        return
    validate(document)


def test_the_validator_used_here_rejects_a_broken_document(documents):
    broken = json.loads(json.dumps(documents["ingest"]))
    broken["paths"][PUBLISH]["post"]["parameters"] = [{"name": "x"}]  # no `in`, no schema
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


@pytest.mark.parametrize("service", [*SERVICES, "asyncapi"])
def test_every_reference_in_each_document_resolves(documents, asyncapi, service):
    document = asyncapi if service == "asyncapi" else documents[service]
    refs = set(_refs(document))
    assert refs
    for ref in refs:
        assert _resolve(document, ref) is not None, ref


@pytest.mark.parametrize("service", SERVICES)
def test_ready_is_documented_with_its_503_on_every_service(stack, documents, service):
    responses = documents[service]["paths"]["/ready"]["get"]["responses"]
    assert {"200", "503"} <= set(responses)
    schema = responses["503"]["content"]["application/json"]["schema"]
    answer = httpx.get(getattr(stack, service).url + "/ready", timeout=10)
    assert jsonschema_rs.Draft202012Validator(schema).is_valid(answer.json())


# -- ingest -------------------------------------------------------------------------------


def test_publish_declares_a_json_record_or_batch_and_an_ndjson_body(documents):
    document = documents["ingest"]
    body = document["paths"][PUBLISH]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json", "application/x-ndjson"}
    one_of = body["content"]["application/json"]["schema"]["oneOf"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in one_of} == {"PublishedRecord", "PublishBatch"}
    assert body["content"]["application/x-ndjson"]["schema"]["type"] == "string"
    record = document["components"]["schemas"]["PublishedRecord"]
    assert set(record["required"]) == {"channel", "message"}
    assert record["additionalProperties"] is False
    assert set(record["properties"]) == {
        "channel",
        "message",
        "level",
        "timestamp",
        "source",
        "fields",
        "id",
    }
    batch = document["components"]["schemas"]["PublishBatch"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    example = body["content"]["application/json"]["example"]
    assert _validator(document, "PublishedRecord").is_valid(example)


def test_publish_declares_both_credentials_and_every_refusal_with_its_headers(documents):
    document = documents["ingest"]
    operation = document["paths"][PUBLISH]["post"]
    assert operation["security"] == [
        {"serviceBearer": []},
        {"serviceBasic": []},
        {"serviceToken": []},
    ]
    schemes = document["components"]["securitySchemes"]
    assert (schemes["serviceBasic"]["type"], schemes["serviceBasic"]["scheme"]) == ("http", "basic")
    assert (schemes["serviceBearer"]["type"], schemes["serviceBearer"]["scheme"]) == (
        "http",
        "bearer",
    )
    assert (
        schemes["serviceToken"]["type"],
        schemes["serviceToken"]["in"],
        schemes["serviceToken"]["name"],
    ) == ("apiKey", "header", "X-Service-Token")
    responses = operation["responses"]
    assert set(responses) == {"202", "400", "401", "403", "413", "415", "429", "431", "503"}
    assert _schema_name(responses["202"]["content"]["application/json"]) == "Accepted"
    for status in ("400", "401", "403", "413", "415", "429", "431", "503"):
        assert _schema_name(responses[status]["content"]["application/json"]) == "ErrorBody"
    for status in ("429", "503"):
        assert responses[status]["headers"]["Retry-After"]["required"] is True


@pytest.mark.parametrize(
    "body, status",
    [
        ({"channel": "logs:etl:{ws}", "message": "documented"}, 202),
        (
            [
                {"channel": "logs:etl:{ws}:a", "message": "one", "level": "WARNING"},
                {"channel": "logs:etl:{ws}:b", "message": "two", "timestamp": 1767225600000},
            ],
            202,
        ),
        ({"channel": "logs:etl:{ws}", "message": "m", "colour": "red"}, 400),
        ({"channel": "logs:nope:{ws}", "message": "m"}, 400),
        ({"channel": "logs:etl:{ws}:a:b", "message": "m"}, 400),
        ({"message": "no channel"}, 400),
        ([{"channel": "logs:etl:{ws}", "message": "m"}] * 1001, 413),
    ],
    ids=[
        "record",
        "batch",
        "unknown-key",
        "unknown-service",
        "four-segments",
        "no-channel",
        "over-the-batch-limit",
    ],
)
def test_the_record_schema_accepts_what_ingest_stores_and_refuses_what_it_refuses(
    stack, documents, unique_id, body, status
):
    document = documents["ingest"]
    body = json.loads(json.dumps(body).replace("{ws}", unique_id))
    answer = httpx.post(stack.ingest.url + PUBLISH, json=body, headers=ETL, timeout=15)
    assert answer.status_code == status, answer.text[:300]
    schema = _validator(document, "PublishBatch" if isinstance(body, list) else "PublishedRecord")
    assert schema.is_valid(body) is (status == 202)
    assert _response_validator(document, PUBLISH, "post", status).is_valid(answer.json())


def test_a_real_ndjson_publish_and_refusals_match_the_documented_answers(
    stack, documents, unique_id
):
    document = documents["ingest"]
    lines = "\n".join(
        json.dumps({"channel": f"logs:etl:{unique_id}", "message": f"m{i}"}) for i in range(3)
    )
    stored = httpx.post(
        stack.ingest.url + PUBLISH,
        content=lines,
        timeout=15,
        headers={**ETL, "Content-Type": "application/x-ndjson"},
    )
    assert stored.status_code == 202
    assert _response_validator(document, PUBLISH, "post", 202).is_valid(stored.json())
    for headers, status in (
        ({}, 401),
        ({"X-Service-Token": "faas-token"}, 403),
        ({**ETL, "Content-Type": "text/plain"}, 415),
    ):
        refused = httpx.post(
            stack.ingest.url + PUBLISH,
            content=lines.split("\n")[0],
            headers={"Content-Type": "application/json", **headers},
            timeout=15,
        )
        assert refused.status_code == status, refused.text[:300]
        assert _response_validator(document, PUBLISH, "post", status).is_valid(refused.json())


# -- gateway ------------------------------------------------------------------------------


def test_the_stream_declares_its_query_parameters_and_the_last_event_id_header(documents):
    document = documents["gateway"]
    parameters = _parameters(document["paths"][STREAM]["get"])
    assert {
        ("query", name)
        for name in ("channels", "last_event_id", "tail", "since", "level", "q", "access_token")
    } | {("header", "Last-Event-ID")} <= set(parameters)
    channels = parameters[("query", "channels")]
    assert channels["required"] is True and channels["explode"] is True
    channels_schema = _resolve(document, channels["schema"]["$ref"])
    assert (channels_schema["type"], channels_schema["maxItems"]) == ("array", 20)
    tail = parameters[("query", "tail")]["schema"]
    assert (tail["type"], tail["minimum"], tail["maximum"]) == ("integer", 0, 10000)
    assert "dev mode" in parameters[("query", "access_token")]["description"]
    channel_list = _validator(document, "ChannelList")
    for good in ("logs:etl:ws1", "logs:etl:ws1:wf1,logs:*:ws2", "logs:faas:ws:*"):
        assert channel_list.is_valid(good), good
    for bad in ("logs:nope:ws1", "logs:etl", "logs:etl:a.b", "logs:etl:ws,", ""):
        assert not channel_list.is_valid(bad), bad


def test_the_stream_declares_an_event_stream_its_refusals_and_its_credentials(documents):
    document = documents["gateway"]
    operation = document["paths"][STREAM]["get"]
    responses = operation["responses"]
    assert set(responses) >= {"200", "400", "401", "403", "429", "503"}
    stream = responses["200"]
    assert set(stream["content"]) == {"text/event-stream"}
    for word in ("retry:", "connected", "event: log", "gap", "overflow", "auth-expired", "hb"):
        assert word in stream["description"], word
    assert {"Cache-Control", "X-Accel-Buffering"} <= set(stream["headers"])
    for status in ("400", "401", "403", "429", "503"):
        assert _schema_name(responses[status]["content"]["application/json"]) == "ErrorBody"
    for status in ("429", "503"):
        assert "Retry-After" in responses[status]["headers"]
    assert operation["security"] == [{"userBearer": []}, {"sessionCookie": []}]
    cookie = document["components"]["securitySchemes"]["sessionCookie"]
    assert (cookie["type"], cookie["in"], cookie["name"]) == (
        "apiKey",
        "cookie",
        "logstream_session",
    )


@pytest.mark.parametrize(
    "query, status",
    [
        ({}, 400),
        ({"channels": ",".join(f"logs:etl:w{i}" for i in range(21))}, 400),
        ({"channels": "logs:etl:{ws}", "tail": "10001"}, 400),
        ({"channels": "logs:etl:elsewhere"}, 403),
    ],
    ids=["no-channels", "21-channels", "tail-over-the-limit", "foreign-workspace"],
)
def test_refused_streams_match_the_documented_refusals(stack, documents, unique_id, query, status):
    query = {key: value.replace("{ws}", unique_id) for key, value in query.items()}
    headers = {"Authorization": f"Bearer {stack.user_token('user123')}"}
    answer = httpx.get(stack.gateway.url + STREAM, params=query, headers=headers, timeout=10)
    assert answer.status_code == status, answer.text[:300]
    assert _response_validator(documents["gateway"], STREAM, "get", status).is_valid(answer.json())


def test_stats_answer_with_their_documented_schema(stack, documents):
    document = documents["gateway"]
    responses = document["paths"]["/admin/logs/stats"]["get"]["responses"]
    assert {"200", "401", "403"} <= set(responses)
    stats = document["components"]["schemas"][
        _schema_name(responses["200"]["content"]["application/json"])
    ]
    assert {"connections", "users", "channels", "delivered_total", "uptime_s"} <= set(
        stats["required"]
    )
    answer = httpx.get(stack.gateway.url + "/admin/logs/stats", timeout=10)  # open in dev mode
    assert answer.status_code == 200
    assert _response_validator(document, "/admin/logs/stats", "get", 200).is_valid(answer.json())


def test_the_dev_test_route_declares_its_optional_body(stack, documents, unique_id):
    document = documents["gateway"]
    operation = document["paths"]["/test/logs"]["post"]
    assert operation["requestBody"]["required"] is False
    body = _validator(document, "TestRecordRequest")
    sent = {"channel": f"logs:etl:{unique_id}", "message": "documented test record"}
    assert body.is_valid(sent) and body.is_valid({})
    assert not body.is_valid({"channel": "logs:etl:x", "colour": "red"})
    answer = httpx.post(stack.gateway.url + "/test/logs", json=sent, timeout=15)
    assert answer.status_code == 202, answer.text[:300]
    assert _response_validator(document, "/test/logs", "post", 202).is_valid(answer.json())


# -- proxy --------------------------------------------------------------------------------


def test_every_product_route_declares_its_parameters_and_what_it_passes_through(stack, documents):
    document = documents["proxy"]
    table = httpx.get(stack.proxy.url + "/api/logs/routes", timeout=10).json()
    assert _response_validator(document, "/api/logs/routes", "get", 200).is_valid(table)
    assert table["routes"]
    for route in table["routes"]:
        operation = document["paths"][route["path"]]["get"]
        parameters = _parameters(operation)
        for name in route["params"]:
            assert parameters[("query", name)]["required"] is True, (route["path"], name)
        assert {("query", name) for name in ("last_event_id", "since", "tail", "level", "q")} | {
            ("header", "Last-Event-ID")
        } <= set(parameters)
        assert ("query", "channels") not in parameters
        responses = operation["responses"]
        assert set(responses["200"]["content"]) == {"text/event-stream"}
        assert {"400", "401", "403", "429", "502", "503"} <= set(responses)
        assert "Retry-After" in responses["502"]["headers"]


def test_a_route_without_its_parameters_is_a_documented_400(stack, documents):
    path = "/api/dapadmin/analytics/sse/logs/stream"
    answer = httpx.get(stack.proxy.url + path, timeout=10)
    assert answer.status_code == 400
    assert _response_validator(documents["proxy"], path, "get", 400).is_valid(answer.json())


def test_the_dev_token_route_declares_its_user_and_answers_as_documented(stack, documents):
    document = documents["proxy"]
    operation = document["paths"]["/dev/token"]["get"]
    [user] = operation["parameters"]
    assert (user["name"], user["required"]) == ("user", True)
    assert set(user["schema"]["enum"]) == {"user123", "user456", "admin"}
    token = httpx.get(stack.proxy.url + "/dev/token", params={"user": "user456"}, timeout=10)
    assert token.status_code == 200 and "logstream_session" in token.headers["set-cookie"]
    assert _response_validator(document, "/dev/token", "get", 200).is_valid(token.json())
    for params, status in (({}, 400), ({"user": "nobody"}, 404)):
        refused = httpx.get(stack.proxy.url + "/dev/token", params=params, timeout=10)
        assert refused.status_code == status
        assert _response_validator(document, "/dev/token", "get", status).is_valid(refused.json())


# -- AsyncAPI -----------------------------------------------------------------------------


def _channel(document: dict[str, Any], address: str | None) -> dict[str, Any]:
    return next(
        channel for channel in document["channels"].values() if channel.get("address") == address
    )


def _message(document: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    [ref] = [message["$ref"] for message in channel["messages"].values()]
    return _resolve(document, ref)


def test_ingest_serves_an_asyncapi_3_document_in_json_and_yaml(stack, asyncapi):
    assert asyncapi["asyncapi"] == "3.0.0"
    ApplicationSchema.model_validate(asyncapi)  # FastStream's own model of AsyncAPI 3.0
    as_yaml = httpx.get(stack.ingest.url + "/schema/asyncapi.yaml", timeout=10)
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.text) == asyncapi
    assert (
        "/schema/asyncapi.json" not in _get_json(stack.ingest.url + "/schema/openapi.json")["paths"]
    )


def test_ingest_logs_declares_the_record_payload_and_the_authorization_header(asyncapi):
    channel = _channel(asyncapi, INGEST_SUBJECT)
    assert channel["bindings"]["nats"]["queue"] == "ingest"
    message = _message(asyncapi, channel)
    payload = _validator(asyncapi, message["payload"]["$ref"].rsplit("/", 1)[1])
    record = {"channel": "logs:faas:ws1:fn1", "message": "hello", "level": "error"}
    assert payload.is_valid(record) and payload.is_valid([record, record])
    assert not payload.is_valid({"message": "no channel"})
    assert not payload.is_valid([record] * 1001)
    headers = _resolve(asyncapi, message["headers"]["$ref"])
    assert "Authorization" in headers["required"]
    [operation] = [
        op
        for op in asyncapi["operations"].values()
        if op["channel"]["$ref"].endswith("/" + INGEST_SUBJECT)
    ]
    assert operation["action"] == "receive"


def test_the_asyncapi_document_declares_the_reply_and_the_rejected_channel(asyncapi):
    [operation] = [op for op in asyncapi["operations"].values() if "reply" in op]
    reply_channel = _resolve(asyncapi, operation["reply"]["channel"]["$ref"])
    assert reply_channel["address"] is None  # the request's own reply subject
    reply = _resolve(asyncapi, operation["reply"]["messages"][0]["$ref"])
    assert reply["payload"] == _message(asyncapi, reply_channel)["payload"]
    rejected = _channel(asyncapi, REJECTED_SUBJECT)
    [send] = [
        op
        for op in asyncapi["operations"].values()
        if op["channel"]["$ref"].endswith("/" + REJECTED_SUBJECT)
    ]
    assert send["action"] == "send"
    assert _message(asyncapi, rejected)["payload"]["$ref"].endswith("/RejectionReport")


async def _connect(nats_server, role: str):
    if nats_server.with_users:
        return await nats_server.connect(role)
    return await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=1)


async def test_real_nats_replies_match_the_documented_reply(
    nats_server, stack, asyncapi, unique_id
):
    reply = _validator(asyncapi, "IngestReply")
    client = await _connect(nats_server, "producer")
    try:
        record = json.dumps({"channel": f"logs:etl:{unique_id}", "message": "over NATS"})
        for headers, status in ((ETL, 202), ({}, 401)):
            answer = await client.request(
                INGEST_SUBJECT, record.encode(), headers=headers, timeout=REPLY_TIMEOUT_S
            )
            body = json.loads(answer.data)
            assert body["status"] == status, body
            assert reply.is_valid(body), body
    finally:
        await client.close()


async def test_a_real_rejection_report_matches_the_documented_report(
    nats_server, stack, asyncapi, unique_id
):
    report = _validator(asyncapi, "RejectionReport")
    operator = await _connect(nats_server, "admin")  # no service user may read ingest.rejected
    producer = await _connect(nats_server, "producer")
    try:
        reports = await operator.subscribe(REJECTED_SUBJECT)
        await settle(operator)
        await producer.publish(
            INGEST_SUBJECT,
            json.dumps({"channel": f"logs:etl:{unique_id}", "message": "no token"}).encode(),
        )
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while True:  # other tests may be refused on the same subject meanwhile
                body = json.loads((await reports.next_msg(timeout=REPLY_TIMEOUT_S)).data)
                if unique_id in body["payload"]:
                    break
        assert body["status"] == 401
        assert report.is_valid(body), body
    finally:
        await producer.close()
        await operator.close()
