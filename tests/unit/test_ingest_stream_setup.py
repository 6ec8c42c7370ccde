"""logstream.services.ingest.publisher.until_answered: an ingest starting beside a cluster that has just
formed waits for JetStream instead of exiting (Kubernetes starts ingests together)."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from logstream.services.ingest.publisher import until_answered


class Flaky:
    """Answers "not yet" ``failures`` times, then ``result``."""

    def __init__(self, failures: list[Exception], result: str = "stream") -> None:
        self.failures, self.result, self.calls = list(failures), result, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


async def test_not_yet_answers_are_tried_again_until_jetstream_answers():
    attempt = Flaky(
        [
            nats.errors.TimeoutError(),
            nats.js.errors.ServiceUnavailableError(),
            nats.errors.NoRespondersError(),
        ]
    )
    assert await until_answered(attempt, what="set-up", within_s=5, pause_s=0) == "stream"
    assert attempt.calls == 4


async def test_a_broker_still_not_answering_when_time_is_up_is_raised():
    attempt = Flaky([nats.errors.TimeoutError()] * 1000)
    with pytest.raises(nats.errors.TimeoutError):
        await until_answered(attempt, what="set-up", within_s=0.05, pause_s=0.01)
    assert 1 < attempt.calls < 1000


async def test_a_real_refusal_is_raised_at_once():
    attempt = Flaky([nats.js.errors.BadRequestError()])
    with pytest.raises(nats.js.errors.BadRequestError):
        await until_answered(attempt, what="set-up", within_s=5, pause_s=0)
    assert attempt.calls == 1
