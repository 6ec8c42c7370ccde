"""FAAS invocations, analytics jobs and platform events, each an endless story on one channel.

- ``faas_invocations``: ``logs:faas:<workspace>:<function>``: cold starts with init duration,
  request ids, REPORT lines (duration, billed ms, memory used/limit), handler errors with a
  traceback, timeouts as errors and throttles as warnings.
- ``analytics_jobs``: ``logs:analytics:<workspace>``: job started, query plan, progress
  (partitions scanned, bytes processed), spills and skew, completion or failure.
- ``platform_events``: ``logs:platform:<workspace>``: deployments, scaling, quota warnings,
  authentication failures and maintenance notices.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator

from logstream.services.simulator.catalog import (
    AnalyticsSpec,
    FunctionSpec,
    LogEvent,
    emitter,
    short_id,
)
from logstream.services.simulator.tracebacks import analytics_fault, faas_fault
from logstream.shared.channels import Channel

__all__ = ["analytics_jobs", "faas_invocations", "platform_events"]

# Outcome odds of one invocation; the rest succeed. Rare enough to read as incidents.
FAAS_THROTTLE, FAAS_TIMEOUT, FAAS_ERROR = 0.03, 0.02, 0.04
# A warm container is reused; about one invocation in eight lands on a fresh one.
FAAS_COLD_START = 0.12
GIB = 1024**3


def faas_invocations(rng: random.Random, spec: FunctionSpec) -> Iterator[LogEvent]:
    emit = emitter(spec.channel)
    version = rng.randint(3, 40)
    cold = True
    while True:
        request = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        roll = rng.random()
        if roll < FAAS_THROTTLE:
            limit = rng.choice((10, 25, 50, 100))
            yield emit(
                "warn",
                "faas.runtime",
                f"Invocation throttled: reserved concurrency of {limit} reached "
                f"(TooManyRequestsException); request {request} rejected",
                request_id=request,
                concurrency_limit=limit,
                in_flight=limit,
                retry_after_ms=rng.choice((100, 250, 500, 1000)),
            )
            continue
        if cold:
            init = round(rng.uniform(180, 1400), 2)
            yield emit(
                "info",
                "faas.runtime",
                f"Cold start: {spec.runtime} runtime initialised in {init} ms "
                f"(version {version}, {spec.memory_mb} MB)",
                request_id=request,
                cold_start=True,
                init_duration_ms=init,
                runtime=spec.runtime,
                version=version,
                memory_limit_mb=spec.memory_mb,
            )
        yield emit(
            "debug",
            "faas.runtime",
            f"START RequestId: {request} Version: {version} (trigger: {spec.trigger})",
            request_id=request,
            trigger=spec.trigger,
            version=version,
        )
        yield from _invocation_outcome(rng, spec, emit, request, roll, cold)
        cold = rng.random() < FAAS_COLD_START


def _invocation_outcome(rng, spec: FunctionSpec, emit, request: str, roll: float, cold: bool):
    used = rng.randint(spec.memory_mb // 5, spec.memory_mb * 9 // 10)
    if roll < FAAS_THROTTLE + FAAS_TIMEOUT:
        duration = spec.timeout_s * 1000.0
        yield emit(
            "error",
            "faas.runtime",
            f"RequestId: {request} Task timed out after {spec.timeout_s:.2f} seconds",
            request_id=request,
            timeout_s=spec.timeout_s,
            duration_ms=duration,
            billed_ms=int(duration),
            memory_used_mb=used,
            memory_limit_mb=spec.memory_mb,
        )
        return
    duration = round(rng.lognormvariate(math.log(40), 0.9), 2)
    if roll < FAAS_THROTTLE + FAAS_TIMEOUT + FAAS_ERROR:
        fault = faas_fault(rng)
        yield emit(
            "error",
            "faas.handler",
            f"Unhandled exception in handler: {fault.type}: {fault.message}",
            request_id=request,
            **fault.as_fields(),
        )
    else:
        yield emit("info", "faas.handler", _handler_note(rng, spec), request_id=request)
    billed = math.ceil(duration)
    yield emit(
        "info",
        "faas.runtime",
        f"REPORT RequestId: {request} Duration: {duration} ms Billed Duration: "
        f"{billed} ms Memory Size: {spec.memory_mb} MB Max Memory Used: {used} MB",
        request_id=request,
        duration_ms=duration,
        billed_ms=billed,
        memory_used_mb=used,
        memory_limit_mb=spec.memory_mb,
        cold_start=cold,
    )


def _handler_note(rng: random.Random, spec: FunctionSpec) -> str:
    if spec.trigger.startswith("s3"):
        return (
            f"Resized uploads/{rng.randint(1000, 9999)}/IMG_{rng.randint(1000, 9999)}.jpg "
            f"to 3 sizes ({rng.randint(40, 900)} KB written)"
        )
    if spec.trigger.startswith("http"):
        event = rng.choice(
            (
                "checkout.session.completed",
                "invoice.paid",
                "customer.subscription.updated",
                "charge.refunded",
            )
        )
        return f"Processed Stripe event {event} for cus_{rng.getrandbits(40):010x}"
    if spec.trigger.startswith("sqs"):
        hit = rng.randint(60, 99)
        return f"Enriched {rng.randint(1, 10)} messages with geo data (cache hit {hit}%)"
    return f"Sent {rng.randint(20, 4000):,} digest emails ({rng.randint(0, 12)} bounced)"


def analytics_jobs(rng: random.Random, spec: AnalyticsSpec) -> Iterator[LogEvent]:
    emit = emitter(spec.channel)
    while True:
        job, query = short_id(rng, "job"), rng.choice(spec.queries)
        partitions = rng.choice((32, 64, 128, 256, 512))
        pruned = rng.randint(0, partitions * 3)
        yield emit(
            "info",
            "analytics.scheduler",
            f"Job {job} ({query}) started: scanning {partitions} partitions of {spec.dataset}",
            job_id=job,
            query=query,
            dataset=spec.dataset,
            partitions_total=partitions,
            engine="arrow-datafusion",
            executors=rng.choice((2, 4, 8)),
        )
        yield emit(
            "debug",
            "analytics.planner",
            f"Query plan for {job}: HashAggregate <- Exchange(hash, 64) <- "
            f"Filter(event_date >= :start) <- ParquetScan({spec.dataset}, "
            f"{partitions} partitions, {pruned} pruned)",
            job_id=job,
            pruned_partitions=pruned,
            broadcast_join=rng.random() < 0.3,
        )
        yield from _job_progress(rng, spec, emit, job, query, partitions)


def _job_progress(rng, spec: AnalyticsSpec, emit, job: str, query: str, partitions: int):
    failing_at = rng.randint(20, 90) if rng.random() < 0.08 else None
    per_partition = rng.randint(40, 600) * 1024**2
    percent, seconds = 0, 0.0
    while percent < 100:
        percent = min(100, percent + rng.randint(8, 30))
        seconds += rng.uniform(1.5, 12)
        scanned = partitions * percent // 100
        processed = scanned * per_partition
        if failing_at is not None and percent >= failing_at:
            fault = analytics_fault(rng)
            yield emit(
                "error",
                "analytics.executor",
                f"Job {job} ({query}) failed at {percent}%: {fault.type}: {fault.message}",
                job_id=job,
                progress_pct=percent,
                bytes_processed=processed,
                **fault.as_fields(),
            )
            return
        if percent < 100:
            yield emit(
                "info",
                "analytics.executor",
                f"Job {job} {percent}% complete: {scanned}/{partitions} partitions, "
                f"{processed / GIB:.1f} GiB processed",
                job_id=job,
                progress_pct=percent,
                partitions_scanned=scanned,
                partitions_total=partitions,
                bytes_processed=processed,
            )
        if rng.random() < 0.07:
            spilled = rng.uniform(0.5, 6)
            yield emit(
                "warn",
                "analytics.executor",
                f"Job {job}: stage spilled {spilled:.1f} GiB to disk (executor memory 8 GiB)",
                job_id=job,
                spilled_bytes=int(spilled * GIB),
                executor_memory_gib=8,
            )
    rows = rng.randint(12, 50_000)
    yield emit(
        "info",
        "analytics.scheduler",
        f"Job {job} ({query}) completed in {seconds:.1f} s: {rows:,} rows returned, "
        f"{partitions * per_partition / GIB:.1f} GiB scanned",
        job_id=job,
        status="completed",
        duration_ms=int(seconds * 1000),
        rows=rows,
        bytes_processed=partitions * per_partition,
        partitions_scanned=partitions,
    )


def platform_events(rng: random.Random, workspace: str) -> Iterator[LogEvent]:
    emit = emitter(Channel("platform", workspace))
    makers = (_deployment, _scaling, _quota, _auth_failure, _maintenance)
    while True:
        yield from rng.choices(makers, (3, 3, 2, 2, 1))[0](rng, emit)


def _deployment(rng: random.Random, emit):
    service = rng.choice(("etl-worker", "faas-router", "query-engine", "api-gateway"))
    version = f"v2.{rng.randint(10, 30)}.{rng.randint(0, 9)}"
    deployment, replicas = short_id(rng, "deploy"), rng.choice((2, 3, 4, 6))
    yield emit(
        "info",
        "platform.deployer",
        f"Deployment {deployment} of {service} {version} started (rolling, {replicas} replicas)",
        deployment_id=deployment,
        service=service,
        version=version,
        strategy="rolling",
        replicas=replicas,
    )
    if rng.random() < 0.1:
        failed = rng.randint(1, replicas)
        yield emit(
            "error",
            "platform.deployer",
            f"Deployment {deployment} rolled back: readiness probe failed on {failed} of "
            f"{replicas} replicas (GET /ready -> 503)",
            deployment_id=deployment,
            service=service,
            version=version,
            status="rolled_back",
            failed_replicas=failed,
        )
        return
    yield emit(
        "info",
        "platform.deployer",
        f"Deployment {deployment} of {service} {version} completed in {rng.randint(40, 300)} s",
        deployment_id=deployment,
        service=service,
        version=version,
        status="completed",
    )


def _scaling(rng: random.Random, emit):
    pool = rng.choice(("faas-pool", "etl-workers", "query-executors"))
    before = rng.randint(2, 12)
    after = max(1, before + rng.choice((-2, -1, 1, 2, 3)))
    direction = "up" if after > before else "down"
    cpu = rng.randint(78, 96) if direction == "up" else rng.randint(12, 45)
    yield emit(
        "info",
        "platform.autoscaler",
        f"Autoscaler scaled {pool} {direction} from {before} to {after} replicas "
        f"(CPU {cpu}%, target 70%)",
        pool=pool,
        replicas_before=before,
        replicas_after=after,
        cpu_pct=cpu,
        target_cpu_pct=70,
    )


def _quota(rng: random.Random, emit):
    kind, limit, unit = rng.choice(
        (
            ("storage", 500, "GiB"),
            ("compute", 2000, "vCPU-hours"),
            ("api_requests", 10_000_000, "requests"),
        )
    )
    percent = rng.randint(80, 99)
    yield emit(
        "warn",
        "platform.quota",
        f"{kind.replace('_', ' ').capitalize()} quota at {percent}% "
        f"({limit * percent // 100:,} of {limit:,} {unit}) this month",
        quota=kind,
        used_pct=percent,
        limit=limit,
        unit=unit,
    )


def _auth_failure(rng: random.Random, emit):
    address = rng.choice(("203.0.113.", "198.51.100.", "192.0.2.")) + str(rng.randint(2, 254))
    reason = rng.choice(("key revoked", "signature mismatch", "token expired", "unknown key"))
    key = f"ak_{rng.getrandbits(16):04x}"
    yield emit(
        "warn",
        "platform.auth",
        f"Authentication failed for API key {key}... from {address}: {reason}",
        key_prefix=key,
        client_ip=address,
        reason=reason,
        attempts_last_hour=rng.randint(1, 40),
    )


def _maintenance(rng: random.Random, emit):
    cluster = rng.choice(("wh-eu-1", "wh-us-2", "nats-core"))
    minutes, days = rng.choice((15, 30, 60)), rng.randint(1, 7)
    yield emit(
        "info",
        "platform.maintenance",
        f"Scheduled maintenance of {cluster} in {days} days: {minutes} min read-only window",
        cluster=cluster,
        in_days=days,
        duration_min=minutes,
        impact="read-only",
    )
