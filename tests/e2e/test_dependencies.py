"""A dependency down: the requests that need it answer 503 at once and leave nothing half-done;
the others keep working; everything heals by itself when the server returns."""

from __future__ import annotations

import os
import signal
import time
import uuid
from contextlib import contextmanager

import httpx
import psutil
import pytest

from shared.events import JobStarted, JobSubmitted

from ..conftest import eventually
from ..integration.helpers import all_events
from .helpers import TERMINAL, job, submit, until_state

pytestmark = pytest.mark.e2e

QUICKLY_S = 10.0  # "never a hang past a few seconds", with room for a loaded machine


async def timed(request):
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_with_nats_down_submit_and_cancel_answer_503_and_leave_nothing(api, stack, log):
    running = await submit(api, job(stack, "sleep 3051\n", time_limit="5"))
    await until_state(api, running, {"RUNNING"})
    stack.nats.stop()
    try:
        response, took = await timed(api.post("/jobs/submit", json=job(stack, "true\n", name="refused-while-down")))
        assert response.status_code == 503 and "NATS" in response.json()["detail"] and took < QUICKLY_S
        response, took = await timed(api.post(f"/jobs/cancel/{running}"))
        assert response.status_code == 503 and "NATS" in response.json()["detail"] and took < QUICKLY_S
        health = await api.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["nats"] != "ok"
        queried = await api.get(f"/jobs/query/{running}")  # the read model is still there
        assert queried.status_code == 200 and queried.json()["state"] == "RUNNING"
    finally:
        stack.nats.start()
    stack.wait_healthy()
    refused = [e for _, e in await all_events(log) if isinstance(e, JobSubmitted) and e.spec.name == "refused-while-down"]
    assert refused == []
    assert (await api.get(f"/jobs/query/{running}")).json()["state"] == "RUNNING"  # the cancel was refused
    assert (await api.post(f"/jobs/cancel/{running}")).status_code == 200
    assert (await until_state(api, running, TERMINAL))["state"] == "CANCELLED"


async def test_with_postgres_down_submits_still_succeed_and_queries_answer_503(api, stack):
    stack.postgres.stop()
    try:
        response, took = await timed(api.post("/jobs/submit", json=job(stack, "echo ran without pg\n")))
        assert response.status_code == 201, response.text
        job_id = response.json()["job_id"]
        response, took = await timed(api.get(f"/jobs/query/{job_id}"))
        assert response.status_code == 503 and "PostgreSQL" in response.json()["detail"] and took < QUICKLY_S
        health = await api.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["postgresql"] != "ok"
        assert took < QUICKLY_S
    finally:
        stack.postgres.start()

    async def healthy():
        return (await api.get("/health")).status_code == 200

    await eventually(healthy, what="the gateway to see PostgreSQL again")
    body = await until_state(api, job_id, TERMINAL)
    assert (body["state"], body["job_log"]["stdout"]) == ("COMPLETED", "ran without pg\n")


@contextmanager
def hung(process):
    """The server stopped dead (SIGSTOP to it and its children: PostgreSQL's backends each have a
    session of their own): connections stay open, nothing answers."""
    everything = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    for pid in everything:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in everything:
            os.kill(pid, signal.SIGCONT)


async def test_with_nats_hung_a_submit_answered_503_never_runs_and_its_retry_does(api, stack, log):
    name, key = f"late-{uuid.uuid4().hex[:6]}", {"Idempotency-Key": uuid.uuid4().hex}
    body = job(stack, "echo ran\n", name=name)
    with hung(stack.nats.process):
        response, took = await timed(api.post("/jobs/submit", json=body, headers=key))
        assert response.status_code == 503 and took < QUICKLY_S
    stack.wait_healthy()

    async def landed():  # the publish was in NATS's buffer: it is stored now that NATS runs again
        return [(seq, e) for seq, e in await all_events(log) if isinstance(e, JobSubmitted) and e.spec.name == name]

    ((job_id, _),) = await eventually(landed, what="the buffered submission to land")
    withdrawn = await until_state(api, str(job_id), TERMINAL)
    assert withdrawn["state"] == "CANCELLED" and "503" in withdrawn["error_msg"]
    assert not any(isinstance(e, JobStarted) and e.job_id == job_id for _, e in await all_events(log))
    # The client retries as told (same key): not the void job, a job of its own that runs; and
    # retrying again still gives that one.
    retried = (await api.post("/jobs/submit", json=body, headers=key)).json()["job_id"]
    assert retried != str(job_id)
    assert (await until_state(api, retried, TERMINAL))["job_log"]["stdout"] == "ran\n"
    assert (await api.post("/jobs/submit", json=body, headers=key)).json()["job_id"] == retried


async def test_with_postgres_hung_queries_answer_503_in_bounded_time(api, stack):
    job_id = await submit(api, job(stack, "true\n"))
    with hung(stack.postgres.process):
        for path in (f"/jobs/query/{job_id}", "/jobs", "/dashboard"):
            response, took = await timed(api.get(path))
            assert response.status_code == 503 and took < QUICKLY_S, (path, response.text)
    assert (await until_state(api, job_id, TERMINAL))["state"] == "COMPLETED"


async def test_a_user_token_keeps_working_for_reads_while_nats_is_down(api, stack):
    created = (await api.post("/admin/tokens", json={"name": f"reader-{uuid.uuid4().hex[:6]}",
                                                     "account": "acct-reader"})).json()
    async with httpx.AsyncClient(base_url=stack.config.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {created['token']}"}) as reader:
        job_id = await submit(reader, job(stack, "echo mine\n", account="acct-reader"))
        await until_state(reader, job_id, TERMINAL)
        stack.nats.stop()
        try:
            assert (await reader.get(f"/jobs/query/{job_id}")).status_code == 200  # token known, read model up
            response = await reader.post("/jobs/submit", json=job(stack, "true\n", account="acct-reader"))
            assert response.status_code == 503
        finally:
            stack.nats.start()
        stack.wait_healthy()
    await api.delete(f"/admin/tokens/{created['name']}")


async def test_health_tells_a_stalled_projection(api, stack):
    stack.stop_service("projector")
    try:
        await submit(api, job(stack, "true\n"))  # the log moves on, the read model does not

        async def stalled():
            response = await api.get("/health")
            return response.status_code == 503 and response.json()["checks"]["projection"].startswith("stalled")

        await eventually(stalled, what="/health to report the stalled projection")
    finally:
        stack.start_service("projector")

    async def healthy():
        return (await api.get("/health")).status_code == 200

    await eventually(healthy, what="/health to recover")
