"""Kill anything, lose nothing: under a steady stream of short jobs, every part of the stack is
SIGKILLed in turn and started again; then the event log, the read model and a run ledger written
by the job scripts themselves must tell the same story."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path

import httpx
import pytest

from services.scheduler.handlers import pid_of
from shared.bus import JetStreamEventLog
from shared.embedded import free_port
from shared.events import (
    JobAllocated,
    JobCancelled,
    JobFinished,
    JobLost,
    JobRequeued,
    JobSubmitted,
    NodeRegistered,
    SchedulerElected,
)
from shared.stack import Stack, StackConfig

from ..conftest import eventually
from ..integration.helpers import processes_with
from .helpers import TERMINAL, job, running_stack, submit, until_state

pytestmark = pytest.mark.e2e

FAULTS = ("scheduler", "executor", "projector", "gateway", "nats", "postgres")
LEDGER_SCRIPT = """#!/bin/bash
echo "$SLURM_JOB_ID start" >> {ledger}
sleep 0.3
echo "$SLURM_JOB_ID end" >> {ledger}
"""


@pytest.fixture(scope="module")
def stack(scratch) -> Stack:
    """A stack of its own, with a standby scheduler; a node timeout long enough for an executor restart."""
    config = StackConfig(home=scratch / "faults", nats_port=free_port(), pg_port=free_port(), api_port=free_port(),
                         total_cpus=2, total_memory_mb=8192, kill_grace_seconds=2.0, schedulers=2,
                         extra_env={"HEARTBEAT_SECONDS": "0.5", "NODE_TIMEOUT_SECONDS": "15",
                                    "SCHEDULER_LEASE_SECONDS": "2", "SNAPSHOT_EVERY_EVENTS": "50"})
    yield from running_stack(config)


class SteadyLoad:
    """Submits a short job every so often; a failed submit is retried with the same idempotency key
    until acknowledged, as a careful client does, so every job it meant to submit is acknowledged once."""

    def __init__(self, stack: Stack, ledger: Path) -> None:
        self.stack = stack
        self.body = job(stack, LEDGER_SCRIPT.format(ledger=ledger), time_limit="5")
        self.acknowledged: list[int] = []
        self.unexpected: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.stack.token}"}
        async with httpx.AsyncClient(base_url=self.stack.config.api_url, headers=headers, timeout=10) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                self.acknowledged.append(await self.submit(client, f"fault-load-{n}"))
                await asyncio.sleep(0.1)

    async def submit(self, client: httpx.AsyncClient, key: str) -> int:
        while True:
            try:
                response = await client.post("/jobs/submit", json=self.body, headers={"Idempotency-Key": key})
                if response.status_code == 201:
                    return int(response.json()["job_id"])
                if response.status_code != 503:  # "not now" is the only acceptable refusal
                    self.unexpected.append(f"{response.status_code} {response.text}")
            except httpx.TransportError:
                pass  # the gateway is down: try again
            await asyncio.sleep(0.2)


async def elected_pid(events: JetStreamEventLog) -> int:
    """The PID of the scheduler elected last."""
    return pid_of((await events.last_on("scns.scheduler.elected")).event.scheduler)


async def active_scheduler(stack: Stack, events: JetStreamEventLog) -> str:
    """The service instance of the scheduler elected last."""
    pid = await elected_pid(events)
    return next(name for name, process in stack.services.items() if process.pid == pid)


def outcome(end) -> str:
    match end:
        case JobFinished(state=state):
            return state
        case JobCancelled():
            return "CANCELLED"
        case JobLost():
            return "NODE_FAIL"


async def test_sigkill_of_each_part_under_load_loses_nothing_and_runs_nothing_twice(stack):
    ledger = stack.config.work_dir / "run-ledger.txt"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    load, stop = SteadyLoad(stack, ledger), asyncio.Event()
    submitting = asyncio.create_task(load.run(stop))
    events = await stack.event_log("fault-test")
    try:
        await eventually(lambda: len(load.acknowledged) >= 5, timeout=60, what="the load to start")
        for part in FAULTS:
            victim = await active_scheduler(stack, events) if part == "scheduler" else part
            before = len(load.acknowledged)
            if part == "scheduler":  # the standby must take over before the killed one is back
                killed = stack.services[victim].pid
                standby = next(p.pid for name, p in stack.services.items() if name.startswith("scheduler")
                               and name != victim)
                stack.kill(victim)

                async def standby_active(standby=standby):
                    return await elected_pid(events) == standby

                await eventually(standby_active, what="the standby to take over")
            await asyncio.to_thread(stack.restart, victim, True)
            await eventually(lambda: len(load.acknowledged) >= before + 5, timeout=90,
                             what=f"submissions to go on after a SIGKILL of the {victim}")
        stop.set()
        await asyncio.wait_for(submitting, timeout=90)
        assert load.unexpected == []

        acknowledged = set(load.acknowledged)

        async def ends() -> dict[int, list]:
            found: dict[int, list] = {}
            for delivered in await events.history("scns.job.*.end.>"):
                found.setdefault(delivered.event.job_id, []).append(delivered.event)
            return found if acknowledged <= found.keys() else None

        job_ends = await eventually(ends, timeout=120, what="every acknowledged job to end")
        log = [(d.seq, d.event) for d in await events.history("scns.>")]
        elections = [event.scheduler for _, event in log if isinstance(event, SchedulerElected)]
    finally:
        stop.set()
        await asyncio.gather(submitting, return_exceptions=True)
        await events.close()

    # Nothing acknowledged is missing from the log (nats-server was SIGKILLed too), nor ended twice.
    submitted = {seq for seq, event in log if isinstance(event, JobSubmitted)}
    assert acknowledged <= submitted
    assert {job_id: len(found) for job_id, found in job_ends.items() if len(found) != 1} == {}
    # The standby took over when the active scheduler was killed (not the killed one, restarted).
    after_kill = [pid_of(e) for e in elections][[pid_of(e) for e in elections].index(killed) + 1]
    assert after_kill == standby
    # No job was placed twice, and no node ever held more than its CPUs.
    allocations = Counter(event.job_id for _, event in log if isinstance(event, JobAllocated))
    assert [job_id for job_id, count in allocations.items() if count > 1] == []
    assert_never_over_committed(log)
    # Every job completed: the restarted executor reattached to the jobs it had left running, and
    # no restart was long enough for the node to be declared down. No job ran twice, by the scripts'
    # own account, and each ran to its end once.
    not_completed = {job_id: job_ends[job_id] for job_id in acknowledged if outcome(job_ends[job_id][0]) != "COMPLETED"}
    assert not_completed == {}
    runs = Counter(tuple(line.split()) for line in ledger.read_text().splitlines())
    assert {(str(job_id), mark) for job_id in acknowledged for mark in ("start", "end")} <= runs.keys()
    assert [line for line, count in runs.items() if count > 1] == []
    # The read model agrees with the log, and equals a fresh rebuild from it.
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.config.api_url, headers=headers, timeout=300) as api:
        for job_id in sorted(acknowledged):
            async def projected(job_id=job_id):
                response = await api.get(f"/jobs/query/{job_id}")
                return response.status_code == 200 and response.json()["state"] in TERMINAL and response.json()

            assert (await eventually(projected, what=f"job {job_id} projected"))["state"] == outcome(
                job_ends[job_id][0]), job_id
        report = (await api.post("/admin/rebuild")).json()
    assert report["error"] is None and report["equal_to_live"] is True


def assert_never_over_committed(log: list) -> None:
    """Walk the log, counting each node's allocated CPUs (independently of the scheduler's fold)."""
    capacity: dict[str, int] = {}
    held: dict[int, tuple[str, int]] = {}
    for seq, event in log:
        match event:
            case NodeRegistered(node=node, cpus=cpus):
                capacity[node] = cpus
            case JobAllocated(job_id=job_id, node=node, cpus=cpus):
                held[job_id] = (node, cpus)
                in_use = sum(c for n, c in held.values() if n == node)
                assert in_use <= capacity[node], f"{node} over-committed at seq {seq}: {in_use} CPUs"
            case JobFinished(job_id=job_id) | JobLost(job_id=job_id) | JobCancelled(job_id=job_id) | JobRequeued(
                    job_id=job_id):
                held.pop(job_id, None)


async def test_stopping_the_stack_ends_the_jobs_of_an_executor_that_died(scratch):
    """What `up` does when its executor crashed, and a test's teardown after it killed one: the
    dead executor's jobs still run, and stopping the stack ends them all the same."""
    config = StackConfig(home=scratch / "dead-executor", nats_port=free_port(), pg_port=free_port(),
                         api_port=free_port(), total_cpus=2, total_memory_mb=8192, kill_grace_seconds=1.0)
    stack = Stack(config).start()
    try:
        headers = {"Authorization": f"Bearer {stack.token}"}
        async with httpx.AsyncClient(base_url=config.api_url, headers=headers, timeout=30) as api:
            job_id = await submit(api, job(stack, "sleep 3065\n"))
            await until_state(api, job_id, {"RUNNING"})
        stack.kill("executor")  # its job runs on, in a session of its own
        assert processes_with("3065")
    finally:
        stack.stop()
    assert not processes_with("3065")
