"""A dependency down: the requests that need it answer 503 at once and leave nothing half-done;
the others keep working; everything heals by itself when the server returns."""

from __future__ import annotations

import time

import pytest

from shared.events import JobSubmitted

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
    finally:
        stack.postgres.start()

    async def healthy():
        return (await api.get("/health")).status_code == 200

    await eventually(healthy, what="the gateway to see PostgreSQL again")
    body = await until_state(api, job_id, TERMINAL)
    assert (body["state"], body["job_log"]["stdout"]) == ("COMPLETED", "ran without pg\n")
