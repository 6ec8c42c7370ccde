"""The proxy's route table: loading, checking a file, and building channels from a query."""

from __future__ import annotations

import pytest

from logstream.services.proxy.routes import load_routes, parse_routes
from logstream.shared.channels import Channel
from logstream.shared.errors import InvalidRequest, SettingsError

ETL = "/api/dapadmin/l5-etl/sse/logs/stream"
FAAS = "/api/dapadmin/faas/sse/logs/stream"
ANALYTICS = "/api/dapadmin/analytics/sse/logs/stream"
PLATFORM = "/api/dapadmin/platform/sse/logs/stream"


def one_route(
    path: str = "/api/x/stream", channel: str = "logs:etl:{workspace_id}", extra: str = ""
) -> str:
    return f'[[routes]]\npath = "{path}"\nchannel = "{channel}"\n{extra}'


def test_packaged_table_has_the_four_contract_routes():
    table = load_routes()
    assert {route.path: route.template for route in table} == {
        ETL: "logs:etl:{workspace_id}:{workflow_id}",
        FAAS: "logs:faas:{workspace_id}:{function_id}",
        ANALYTICS: "logs:analytics:{workspace_id}",
        PLATFORM: "logs:platform:{workspace_id}",
    }
    assert table.by_path(FAAS).params == ("workspace_id", "function_id")


@pytest.mark.parametrize(
    ("path", "query", "channel"),
    [
        (ETL, {"workspace_id": ["ws1"], "workflow_id": ["wf-1"]}, Channel("etl", "ws1", "wf-1")),
        (FAAS, {"workspace_id": ["ws1"], "function_id": ["fn_2"]}, Channel("faas", "ws1", "fn_2")),
        (ANALYTICS, {"workspace_id": ["ws1"]}, Channel("analytics", "ws1")),
        (PLATFORM, {"workspace_id": ["ws1"]}, Channel("platform", "ws1")),
    ],
)
def test_each_route_builds_its_channel_from_the_query(path, query, channel):
    assert load_routes().by_path(path).channel_for(query) == channel


def test_unrelated_query_parameters_are_ignored_when_building_the_channel():
    route = load_routes().by_path(ANALYTICS)
    query = {"workspace_id": ["ws1"], "tail": ["5"]}
    assert route.channel_for(query) == Channel("analytics", "ws1")


@pytest.mark.parametrize("given", [None, [], [""]])
def test_a_missing_parameter_is_an_invalid_request_naming_it(given):
    route = load_routes().by_path(ETL)
    with pytest.raises(InvalidRequest) as caught:
        route.channel_for({"workspace_id": ["ws1"], "workflow_id": given})
    assert "'workflow_id' is required" in caught.value.message
    assert caught.value.details == [{"parameter": "workflow_id", "problem": "missing"}]


@pytest.mark.parametrize("value", ["a.b", "a*", ">", "has space", "x" * 65, "ws:1", "é"])
def test_a_malformed_parameter_is_an_invalid_request_naming_it(value):
    route = load_routes().by_path(ETL)
    with pytest.raises(InvalidRequest) as caught:
        route.channel_for({"workspace_id": [value], "workflow_id": ["wf"]})
    assert "'workspace_id'" in caught.value.message
    assert caught.value.details == [{"parameter": "workspace_id", "problem": "invalid"}]


def test_a_parameter_given_twice_is_an_invalid_request():
    route = load_routes().by_path(PLATFORM)
    with pytest.raises(InvalidRequest, match="more than once"):
        route.channel_for({"workspace_id": ["a", "b"]})


def test_there_are_no_default_ids():
    for route in load_routes():
        with pytest.raises(InvalidRequest, match="'workspace_id' is required"):
            route.channel_for({})


def test_a_route_file_may_name_and_label_its_routes(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text(one_route(extra='name = "mine"\nlabel = "My logs"\n'))
    route = load_routes(str(path)).by_path("/api/x/stream")
    assert (route.name, route.label) == ("mine", "My logs")
    assert route.describe()["params"] == ["workspace_id"]


def test_a_route_name_defaults_to_the_channel_service():
    route = parse_routes(one_route(channel="logs:faas:{w}:{f}"), "t").routes[0]
    assert (route.name, route.label, route.params) == ("faas", "faas", ("w", "f"))


def test_a_literal_segment_in_a_template_is_kept():
    route = parse_routes(one_route(channel="logs:platform:{w}:billing"), "t").routes[0]
    assert route.channel_for({"w": ["ws9"]}) == Channel("platform", "ws9", "billing")


def test_services_outside_the_configured_set_are_refused_at_load():
    with pytest.raises(SettingsError, match="unknown service 'etl'"):
        parse_routes(one_route(), "t", services={"faas"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not toml = = 1", "not valid TOML"),
        ("", "routes"),
        ("routes = []", "no [[routes]]"),
        ('[[routes]]\npath = "/a/b"\n', "channel"),
        ('[[routes]]\nchannel = "logs:etl:{w}"\n', "path"),
        (one_route(extra='colour = "red"\n'), "colour"),
        (one_route(path="api/no-slash"), "absolute URL path"),
        (one_route(path="/api/../x"), "absolute URL path"),
        (one_route(path="/api/{w}"), "absolute URL path"),
        (one_route(path="/health"), "reserved"),
        (one_route(path="/static/app.js"), "reserved"),
        (one_route(path="/api/logs/history"), "reserved"),
        (one_route(channel="etl:{w}"), "must start with 'logs:<service>:'"),
        (one_route(channel="logs:{service}:{w}"), "service is fixed"),
        (one_route(channel="logs:etl:{w}:{w}"), "names a parameter twice"),
        (one_route(channel="logs:etl:ws-{w}"), "either literal or exactly one {parameter}"),
        (one_route(channel="logs:etl:{w"), "either literal or exactly one {parameter}"),
        (one_route(channel="logs:etl:{1w}"), "either literal or exactly one {parameter}"),
        (one_route(channel="logs:etl"), "does not make a channel"),
        (one_route(channel="logs:etl:{a}:{b}:{c}"), "does not make a channel"),
        (one_route(channel="logs:nope:{w}"), "unknown service"),
        (one_route(channel="logs:etl:a.b"), "does not make a channel"),
        (one_route() + "\n" + one_route(channel="logs:faas:{w}"), "appears more than once"),
        (one_route() + "\n" + one_route(path="/api/y/stream"), "name 'etl' appears more than once"),
        (one_route(extra='name = "bad name"\n'), "name 'bad name'"),
    ],
)
def test_a_bad_route_file_stops_the_proxy_naming_routes_file(tmp_path, text, problem):
    path = tmp_path / "routes.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_routes(str(path))
    assert "routes_file" in caught.value.message
    assert str(path) in caught.value.message
    assert problem in caught.value.message


def test_a_missing_route_file_stops_the_proxy_naming_routes_file(tmp_path):
    with pytest.raises(SettingsError, match=r"routes_file .*cannot read it"):
        load_routes(str(tmp_path / "absent.toml"))
