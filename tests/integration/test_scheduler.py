import asyncio
from collections import Counter

import pytest

from services.scheduler.core.policy import fifo_first_fit
from services.scheduler.handlers import Scheduler
from shared.events import JobAllocated, JobCancelled, JobCancelRequested, JobFinished, JobSubmitted

from ..conftest import eventually
from .helpers import NOW, all_events, node, spec

pytestmark = pytest.mark.integration


async def allocations(events):
    return [e for _, e in await all_events(events) if isinstance(e, JobAllocated)]


async def test_places_jobs_and_a_restart_decides_nothing_twice(event_log):
    await event_log.publish(node("n1", cpus=2))
    jobs = [(await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW)))[0] for _ in range(3)]
    first = Scheduler(event_log, fifo_first_fit, node_timeout_s=60)
    task = asyncio.create_task(first.follow_log())
    try:
        placed = await eventually(lambda: _count(event_log, 2), what="two allocations")
        assert [a.job_id for a in placed] == jobs[:2]  # FIFO, and the third does not fit
    finally:
        task.cancel()
    # A new scheduler replays the log: it must not place the first two again.
    second = Scheduler(event_log, fifo_first_fit, node_timeout_s=60)
    task = asyncio.create_task(second.follow_log())
    try:
        await second.caught_up.wait()
        await event_log.publish(JobFinished(job_id=jobs[0], node="n1", state="COMPLETED", exit_code="0:0",
                                            ended_at=NOW))
        placed = await eventually(lambda: _count(event_log, 3), what="the third allocation")
        assert Counter(a.job_id for a in placed) == Counter(jobs)
    finally:
        task.cancel()


async def test_cancel_of_a_pending_job_is_decided_by_the_scheduler(event_log):
    job_id, _ = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))  # no node: it waits
    scheduler = Scheduler(event_log, fifo_first_fit, node_timeout_s=60)
    task = asyncio.create_task(scheduler.follow_log())
    try:
        await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))

        async def cancelled():
            return [e for _, e in await all_events(event_log) if isinstance(e, JobCancelled)]

        assert [e.job_id for e in await eventually(cancelled, what="JobCancelled")] == [job_id]
        await event_log.publish(node("n1"))  # a node arrives: the cancelled job must not be placed
        await eventually(lambda: _seen(scheduler, event_log), what="the scheduler reading the node")
        assert await allocations(event_log) == []
    finally:
        task.cancel()


async def _count(events, n):
    found = await allocations(events)
    return found if len(found) >= n else None


async def _seen(scheduler, events):
    return scheduler.state.last_seq >= await events.last_seq()
