"""Benchmarks of a running stack through its HTTP API, each a run (or two at once) of the shared
load generator, bench/loadgen.py. Each returns the load generator's figures for its mode."""

from __future__ import annotations

import asyncio
import re
import statistics
import time

import httpx
from harness import loadgen, loadgen_process, loadgen_result

from shared.stack import Stack

DRAIN_CLIENTS = 32
QUERY_CLIENTS = 32
ENDED_JOBS = 200
PROJECTION_LAG = re.compile(r"^scns_projection_lag_events (\d+)", re.M)


def wait_for_projector(stack: Stack, timeout: float = 120) -> float:
    """Until the read model has caught up with the log (a backlog left by the benchmark before would
    take CPU from the next one); the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        lag = PROJECTION_LAG.search(httpx.get(f"{stack.config.api_url}/metrics", timeout=10).text)
        if lag and int(lag.group(1)) == 0:
            break
        time.sleep(0.2)
    return round(time.monotonic() - started, 1)


LATENCY_GAP_S = 0.2
POLL_INTERVAL_S = 0.01
LONGER_JOB = r"#!/bin/bash\nsleep 0.2\necho hi\n"  # the load generator turns "\n" into newlines


def latency(stack: Stack, samples: int) -> dict:
    """Submit -> RUNNING and submit -> finished, one job at a time on an idle system. No pause
    jitter: the scheduler runs a pass whenever the log moves, it has no period to phase-lock to.
    `echo hi` may end before a query sees it RUNNING, and such a sample does not count in submit ->
    RUNNING: a job that runs 0.2 s (`longer_job`) is RUNNING across several queries. With the floor
    of the client's way of measuring on this machine (`client_floor_ms`)."""
    options = ("--samples", str(samples), "--gap", str(LATENCY_GAP_S), "--gap-jitter", "0",
               "--poll-interval", str(POLL_INTERVAL_S))
    figures = loadgen(stack, "latency", *options)
    longer_job = loadgen(stack, "latency", *options, "--script", LONGER_JOB)
    return {**figures, "longer_job": longer_job, "client_floor_ms": asyncio.run(client_floor_ms(stack, samples))}


async def client_floor_ms(stack: Stack, samples: int) -> float:
    """The median time the load generator's requests for a job seen RUNNING at its second poll take
    when the server does nothing: a submit, a poll, the poll interval, a poll, each request a
    `GET /`, after the same pause and with the same client library. On a small VM each request
    after a pause costs a few times what it does back to back (here `GET /`: ~2.8 ms against ~0.7)."""
    totals = []
    async with httpx.AsyncClient(base_url=stack.config.api_url, trust_env=False) as client:
        for _ in range(samples):
            await asyncio.sleep(LATENCY_GAP_S)
            started = time.perf_counter()
            (await client.get("/")).raise_for_status()
            (await client.get("/")).raise_for_status()
            await asyncio.sleep(POLL_INTERVAL_S)
            (await client.get("/")).raise_for_status()
            totals.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(totals), 2)


def cancel(stack: Stack, samples: int) -> dict:
    """Cancel of a running `sleep`: until the query says CANCELLED; then whether it stays so and
    the process is gone."""
    figures = loadgen(stack, "cancel", "--samples", str(samples), "--settle", "1", "--gap", "0.2")
    figures.pop("rows")  # one per sample; the summary says it all
    return figures


def hold_new_jobs(stack: Stack) -> None:
    """Drain the node (an admin's `POST /admin/nodes/<node>/drain`): submissions are accepted and
    stay PENDING, so the submit figures are the submit path alone, not shared with running jobs."""
    url = f"{stack.config.api_url}/admin/nodes/{stack.config.node_name}/drain"
    httpx.post(url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=10).raise_for_status()


def submit(stack: Stack, jobs_by_clients: dict[int, int]) -> dict:
    """Accepted submits per second, and their latency, at each number of concurrent clients."""
    figures = {}
    for clients, jobs in jobs_by_clients.items():
        figures[f"c{clients}"] = {"projector_catch_up_s": wait_for_projector(stack),
                                  **loadgen(stack, "submit", *submit_options(jobs, clients))}
    return figures


def submit_options(jobs: int, clients: int) -> tuple[str, ...]:
    return "--jobs", str(jobs), "--concurrency", str(clients)


def job_ids(stack: Stack, state: str | None = None) -> list[str]:
    """The newest 1,000 jobs' ids (of those in `state`)."""
    response = httpx.get(f"{stack.config.api_url}/jobs", params={"limit": 1000, **({"state": state} if state else {})},
                         headers={"Authorization": f"Bearer {stack.token}"}, timeout=10)
    response.raise_for_status()
    return [job["job_id"] for job in response.json()["jobs"]]


def queryable_ids(stack: Stack) -> list[str]:
    """Jobs to query: those the benchmarks before left, or 200 submitted now (run alone by --only)."""
    if not job_ids(stack):
        loadgen(stack, "submit", "--jobs", "200", "--concurrency", "8", "--no-cleanup")
    return job_ids(stack)


def run_jobs_to_their_end(stack: Stack) -> None:
    """Jobs that ended, to be queried: a query of one shows its output, which its node serves."""
    loadgen(stack, "drain", "--jobs", str(ENDED_JOBS), "--concurrency", "16")


def query(stack: Stack, seconds: float) -> dict:
    """Queries of existing jobs by QUERY_CLIENTS clients: alone, then while as many clients submit;
    and of ended jobs alone (those of run_jobs_to_their_end and the benchmarks before)."""
    ids = ",".join(queryable_ids(stack))
    idle = {"projector_catch_up_s": wait_for_projector(stack), **loadgen(stack, "query", *query_options(ids, seconds))}
    ended = loadgen(stack, "query", *query_options(",".join(job_ids(stack, "COMPLETED")), seconds))
    # The submitters are bounded by time, not by count: they stop with the queries.
    submitters = loadgen_process(stack, "submit", "--jobs", "1000000", "--concurrency", str(QUERY_CLIENTS),
                                 "--timeout", str(seconds + 1), "--no-cleanup")
    under_load = loadgen(stack, "query", *query_options(ids, seconds))
    return {"idle": idle, "ended": ended,
            "under_submit_load": {**under_load, "submit_load": loadgen_result(submitters)}}


def query_options(ids: str, seconds: float) -> tuple[str, ...]:
    return "--ids", ids, "--concurrency", str(QUERY_CLIENTS), "--duration", str(seconds)


def drain(stack: Stack, jobs: int) -> dict:
    """`jobs` trivial jobs submitted at once, until every one is terminal."""
    return loadgen(stack, "drain", *drain_options(jobs))


def drain_options(jobs: int) -> tuple[str, ...]:
    return "--jobs", str(jobs), "--concurrency", str(DRAIN_CLIENTS), "--timeout", "900"
