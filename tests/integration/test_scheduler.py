import asyncio

import pytest

from services.scheduler.core.policy import fifo_first_fit
from services.scheduler.handlers import Scheduler
from shared.events import JobAllocated, JobCancelled, JobCancelRequested, JobFinished, JobSubmitted

from ..conftest import eventually
from .helpers import NOW, node, spec

pytestmark = pytest.mark.integration


class RecordingScheduler(Scheduler):
    """The real scheduler, remembering every decision it publishes (the log's dedup would hide repeats)."""

    def __init__(self, events):
        super().__init__(events, fifo_first_fit, node_timeout_s=60)
        self.decisions = []

    async def publish(self, decision):
        self.decisions.append(decision)
        await super().publish(decision)


async def decided_through_marker(scheduler, events):
    """Publish a marker event and wait until the scheduler has finished a pass after it."""
    marker, _ = await events.publish(JobCancelRequested(job_id=10**9, requested_at=NOW))
    await eventually(lambda: scheduler.decided_through >= marker, what="a pass after the marker")


async def running(scheduler):
    task = asyncio.create_task(scheduler.follow_log())
    await scheduler.caught_up.wait()
    return task


async def test_places_jobs_fifo_and_a_restarted_scheduler_decides_nothing_twice(event_log):
    await event_log.publish(node("n1", cpus=2))
    jobs = [(await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW)))[0] for _ in range(3)]
    first = RecordingScheduler(event_log)
    task = await running(first)
    try:
        await decided_through_marker(first, event_log)
        assert [(d.job_id, d.node) for d in first.decisions] == [(jobs[0], "n1"), (jobs[1], "n1")]
    finally:
        task.cancel()
    second = RecordingScheduler(event_log)
    task = await running(second)
    try:
        await decided_through_marker(second, event_log)
        assert second.decisions == []  # it replayed the first one's decisions: nothing to redo
        await event_log.publish(JobFinished(job_id=jobs[0], node="n1", state="COMPLETED", exit_code="0:0",
                                            ended_at=NOW))
        await decided_through_marker(second, event_log)
        assert [d.job_id for d in second.decisions] == [jobs[2]]
    finally:
        task.cancel()


async def test_cancel_of_a_pending_job_is_decided_by_the_scheduler(event_log):
    job_id, _ = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))  # no node: it waits
    scheduler = RecordingScheduler(event_log)
    task = await running(scheduler)
    try:
        await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
        await event_log.publish(node("n1"))  # a node arrives: the cancelled job must not be placed
        await decided_through_marker(scheduler, event_log)
        assert scheduler.decisions == [JobCancelled(job_id=job_id, cancelled_at=scheduler.decisions[0].cancelled_at)]
        assert not any(isinstance(d, JobAllocated) for d in scheduler.decisions)
    finally:
        task.cancel()
