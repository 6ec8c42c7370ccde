"""Channel mapping rules in a real ingest: OTLP exports and Loki pushes that name no channel get
the one the first matching rule makes, and the token's grants still decide (services/ingest/
channel_rules.py; a file that cannot be used is test_service_startup's)."""

from __future__ import annotations

import json

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.support.jetstream import stored
from tests.support.processes import ServiceProcess

ETL = {"Authorization": "Bearer l5-etl-token"}
RULES = """
[[rules]]
channel = "logs:etl:{workspace_id}:{workflow_id}"
when = { "service.namespace" = "etl" }

[[rules]]
channel = "logs:faas:{namespace}:{function}"
"""


@pytest.fixture(scope="module")
def ingest(nats_server, log_dir, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "channel-rules.toml"
    rules.write_text(RULES)
    service = ServiceProcess(
        "ingest", nats_url=nats_server.url, log_dir=log_dir, args=["--channel-rules", str(rules)]
    ).start()
    yield service
    service.stop()


@pytest.fixture
def js(nc):
    return nc.jetstream()


def _kv(**values) -> list[KeyValue]:
    return [
        KeyValue(key=k.replace("__", "."), value=AnyValue(string_value=v))
        for k, v in values.items()
    ]


async def test_an_otlp_export_without_a_channel_is_mapped_by_its_attributes(ingest, js, unique_id):
    export = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=_kv(service__namespace="etl", workspace_id=unique_id)),
                scope_logs=[
                    ScopeLogs(
                        log_records=[
                            LogRecord(
                                body=AnyValue(string_value="mapped"),
                                attributes=_kv(workflow_id="wf1"),
                            ),
                        ]
                    )
                ],
            )
        ]
    )
    answer = httpx.post(
        ingest.url + "/v1/logs",
        content=export.SerializeToString(),
        headers={**ETL, "Content-Type": "application/x-protobuf"},
    )
    assert answer.status_code == 200, answer.text
    ((_, _, record),) = await stored(js, f"logs.etl.{unique_id}.wf1")
    assert record["channel"] == f"logs:etl:{unique_id}:wf1" and record["message"] == "mapped"


async def test_a_loki_push_is_mapped_by_its_labels_and_the_grants_still_decide(
    ingest, js, unique_id
):
    def push(labels: dict) -> httpx.Response:
        body = {"streams": [{"stream": labels, "values": [["1", "hello"]]}]}
        return httpx.post(
            ingest.url + "/loki/api/v1/push",
            content=json.dumps(body).encode(),
            headers={**ETL, "Content-Type": "application/json"},
        )

    mapped = push({"service.namespace": "etl", "workspace_id": unique_id, "workflow_id": "loki"})
    assert mapped.status_code == 204, mapped.text
    assert len(await stored(js, f"logs.etl.{unique_id}.loki")) == 1
    # the second rule maps to a faas channel, which the etl token may not publish to
    refused = push({"namespace": unique_id, "function": "resize"})
    assert refused.status_code == 403
    assert await stored(js, f"logs.faas.{unique_id}.resize") == []
    # nothing matches: the entry is named, nothing stored
    unmatched = push({"service.namespace": "etl", "workspace_id": unique_id})
    assert unmatched.status_code == 400
    assert "no channel rule matches" in unmatched.json()["details"][0]["message"]
