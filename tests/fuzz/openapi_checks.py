"""What every fuzzed response is held to, and the bounds of every OpenAPI fuzz run.

A response is never a 5xx (503 would mean NATS is down, and it is up), and it conforms to the
operation's document where the document speaks: its content type and body schema for a
documented status, and its status itself where the operation documents its errors at all.
"""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

__all__ = ["FUZZ", "checks_for", "fuzz_operation", "open_and_close"]

# Bounded (the whole fuzz folder runs in about a minute on 2 cores) and reproducible: the same
# examples on every run, so CI never fails on a case nobody can replay.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


def checks_for(operation) -> list:
    checks = [
        not_a_server_error,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    if any(code.startswith("4") for code in operation.responses.status_codes):
        checks.append(status_code_conformance)
    return checks


def fuzz_operation(
    operation,
    mode,
    *,
    base_url: str,
    headers: dict[str, str],
    statuses: set[int],
    max_examples: int = FUZZ.max_examples,
) -> None:
    """Send generated requests (``FUZZ``-bounded) with ``headers`` added; every response must
    pass ``checks_for(operation)`` and have one of ``statuses``."""
    checks = checks_for(operation)

    @settings(FUZZ, max_examples=max_examples)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=headers, checks=checks, timeout=10
        )
        assert response.status_code in statuses, (response.status_code, response.text[:500])

    run()


# What a stream request may answer: the stream, or one of its documented refusals.
STREAM_STATUSES = {200, 400, 401, 403, 429}


def fuzz_stream(
    operation, mode, *, base_url: str, headers: dict[str, str], max_examples: int
) -> None:
    """Generated stream requests with ``headers`` added: each opens a stream (closed after its
    opening frames) or is refused in the error shape, as the operation documents."""
    checks = checks_for(operation)

    @settings(FUZZ, max_examples=max_examples)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = open_and_close(case, base_url, headers)
        assert response.status_code in STREAM_STATUSES, (response.status_code, response.text)
        if response.status_code != 200:
            assert set(response.json()) == {"error", "message", "details"}
            case.validate_response(response, checks=checks)

    run()


def open_and_close(case, base_url: str, auth: dict[str, str]) -> httpx.Response:
    """Send a stream case with ``auth`` added: a 200 is checked for its event-stream type and
    its opening frames (``retry:``, ``event: connected``), then closed; anything else is read."""
    sent = case.as_transport_kwargs(base_url=base_url)
    headers = {**sent["headers"], **auth}
    with httpx.Client(timeout=httpx.Timeout(10, read=10)) as client:
        with client.stream(
            sent["method"],
            sent["url"],
            params=sent.get("params"),
            headers=headers,
            cookies=sent.get("cookies"),
        ) as response:
            if response.status_code != 200:
                response.read()
                return response
            assert response.headers["content-type"].startswith("text/event-stream")
            first = b""
            for chunk in response.iter_raw():
                first += chunk
                if b"\n\n" in first:
                    break
            assert first.startswith(b"retry: ") and b"event: connected\n" in first, first
            return response
