"""One job, one trace: the whole stack exports its spans over OTLP/HTTP to a receiver in this
test, and the spans of the four services share the job's trace id with the expected parents."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from shared.embedded import free_port
from shared.otlp_receiver import OtlpReceiver
from shared.stack import Stack, StackConfig

from ..conftest import eventually
from .helpers import TERMINAL, job, running_stack, submit, until_state

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(scratch, receiver) -> Iterator[Stack]:
    config = StackConfig(home=scratch / "traced", nats_port=free_port(), pg_port=free_port(), api_port=free_port(),
                         total_cpus=2, total_memory_mb=8192, kill_grace_seconds=2.0,
                         extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
                                    "OTEL_METRIC_EXPORT_INTERVAL": "500"})
    yield from running_stack(config)


@pytest.fixture
async def api(stack: Stack):
    async with httpx.AsyncClient(base_url=stack.config.api_url, headers={"Authorization": f"Bearer {stack.token}"},
                                 timeout=30) as client:
        yield client


async def test_a_job_is_one_trace_across_the_four_services(api, stack, receiver):
    job_id = await submit(api, job(stack, "echo traced\n"))
    body = await until_state(api, job_id, TERMINAL)
    trace_id = body["detail"]["trace_id"]
    assert body["state"] == "COMPLETED" and trace_id and len(trace_id) == 32

    def one_of_each():
        spans = {(span.service, span.name): span for span in receiver.of_trace(trace_id)}
        wanted = {("scns-gateway", "POST /jobs/submit"), ("scns-gateway", "publish JobSubmitted"),
                  ("scns-scheduler", "schedule JobAllocated"), ("scns-scheduler", "queued"),
                  ("scns-executor", "run job"), ("scns-projector", "project JobSubmitted"),
                  ("scns-projector", "project JobStarted"), ("scns-projector", "project JobFinished")}
        return spans if wanted <= spans.keys() else None

    spans = await eventually(one_of_each, what="the spans of all four services")
    request, publish = spans["scns-gateway", "POST /jobs/submit"], spans["scns-gateway", "publish JobSubmitted"]
    decision, run = spans["scns-scheduler", "schedule JobAllocated"], spans["scns-executor", "run job"]
    assert request.parent_id == ""  # the trace begins with the submit request
    assert publish.parent_id == request.span_id
    assert decision.parent_id == publish.span_id and spans["scns-scheduler", "queued"].parent_id == publish.span_id
    assert run.parent_id == decision.span_id
    usage = dict(run.attributes)
    assert (usage["scns.state"], usage["scns.exit_code"]) == ("COMPLETED", "0:0") and float(usage["scns.cpu_seconds"]) >= 0
    assert spans["scns-projector", "project JobSubmitted"].parent_id == publish.span_id
    assert spans["scns-projector", "project JobStarted"].parent_id == run.span_id
    assert spans["scns-projector", "project JobFinished"].parent_id == run.span_id

    assert not [span for span in receiver.spans if span.name == "GET /health"]  # probes are not traced

    # The executor's log lines about the job are JSON carrying its id and its trace.
    lines = [json.loads(line) for line in (stack.logs / "executor.log").read_text().splitlines()
             if line.startswith("{")]
    about_the_job = [line for line in lines if line.get("job_id") == int(job_id)]
    assert about_the_job and all(line["trace_id"] == trace_id for line in about_the_job)

    # Each query (the test polled the job) is a trace of its own, linked to the job's.
    def query_linked():
        return [span for span in receiver.spans if span.name == "query job" and trace_id in span.linked_traces]

    queries = await eventually(query_linked, what="the queries' spans, linked to the job's trace")
    assert all(query.trace_id != trace_id for query in queries)


async def test_the_gateway_and_the_executor_export_metrics_over_otlp_too(api, receiver, stack):
    await until_state(api, await submit(api, job(stack, "true\n")), TERMINAL)
    wanted = {("scns-gateway", name) for name in ("scns.queue_depth", "scns.jobs.running", "scns.node.cpus_allocated",
                                                  "scns.jobs.submitted", "scns.jobs.finished", "scns.projection.lag")}
    wanted |= {("scns-executor", "scns.job.wait"), ("scns-executor", "scns.job.run")}
    await eventually(lambda: wanted <= receiver.metrics, what="the gateway's metrics at the receiver")
