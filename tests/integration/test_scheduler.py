import asyncio
import signal

import pytest

from services.scheduler.core.policy import fifo_first_fit
from services.scheduler.core.state import SchedulerState, evolve
from services.scheduler.handlers import Scheduler
from services.scheduler.snapshots import SnapshotStore
from shared.bus import JetStreamEventLog
from shared.events import (
    ACTIVE_SCHEDULER_SUBJECT,
    SNAPSHOTS_BUCKET,
    STREAM,
    JobAllocated,
    JobCancelled,
    JobCancelRequested,
    JobFinished,
    JobSubmitted,
    SchedulerElected,
)

from shared.service import until_stopped

from ..conftest import eventually
from .helpers import NOW, node, spec

pytestmark = pytest.mark.integration


class RecordingScheduler(Scheduler):
    """The real scheduler, remembering every decision it publishes (the log's dedup would hide repeats)."""

    def __init__(self, events, **options):
        super().__init__(events, fifo_first_fit, node_timeout_s=60, **{"lease_s": 1.0, **options})
        self.decisions = []

    async def publish(self, decision, headers=None):
        self.decisions.append(decision)
        return await super().publish(decision, headers)


async def decided_through_marker(scheduler, events):
    """Publish a marker event and wait until the scheduler has finished a pass after it."""
    marker, _ = await events.publish(JobCancelRequested(job_id=10**9, requested_at=NOW))
    await eventually(lambda: scheduler.decided_through >= marker, what="a pass after the marker")


def start(scheduler) -> asyncio.Task:
    """Run the scheduler as its bootstrap does: follow the log and contend for being active."""
    return asyncio.create_task(until_stopped(asyncio.Event(), scheduler.follow_log(), scheduler.contend()))


async def running(scheduler):
    task = start(scheduler)
    await eventually(lambda: scheduler.active, what="the scheduler to be active")
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


async def placed(events, job_id):
    return await events.last_on(f"scns.job.{job_id}.allocated.*")


async def test_one_of_two_schedulers_is_active_and_a_standby_takes_over_when_it_dies(event_log, nats_server):
    await event_log.publish(node("n1", cpus=1))
    first_log = await JetStreamEventLog.connect(nats_server.url, "first")
    first, second = RecordingScheduler(first_log), RecordingScheduler(event_log)
    first_task = await running(first)
    second_task = start(second)
    try:
        await second.caught_up.wait()
        jobs = [(await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW)))[0] for _ in range(2)]
        await eventually(lambda: placed(event_log, jobs[0]), what="the first job placed")
        assert not second.active and second.decisions == []
        # The active one dies as a SIGKILL would leave it: its connection gone, nothing cleaned up.
        first_task.cancel()
        await first_log.nc.close()
        await event_log.publish(JobFinished(job_id=jobs[0], node="n1", state="COMPLETED", exit_code="0:0",
                                            ended_at=NOW))
        allocation = await eventually(lambda: placed(event_log, jobs[1]), timeout=10, what="the standby to place")
        assert second.active and [d.job_id for d in second.decisions] == [jobs[1]]
        assert [d.job_id for d in first.decisions] == [jobs[0]]
        elections = await event_log.history("scns.scheduler.elected")
        assert [d.event.scheduler for d in elections] == [first.identity, second.identity]
        assert allocation.seq > elections[-1].seq
    finally:
        second_task.cancel()
        await first_log.close()


async def test_a_deposed_scheduler_cannot_write_a_decision(event_log, nats_server):
    await event_log.publish(node("n1", cpus=1))
    stale_log = await JetStreamEventLog.connect(nats_server.url, "stale")
    stale = RecordingScheduler(stale_log)
    task = await running(stale)
    task.cancel()  # it stops reading the log, as a hung process would, still believing it is active
    await asyncio.gather(task, return_exceptions=True)
    successor = RecordingScheduler(event_log)
    task = await running(successor)
    try:
        job_id, _ = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))
        await eventually(lambda: placed(event_log, job_id), what="the successor to place the job")
        # The stale one wakes up with its old view: the job pending, the node free, itself leader.
        evolve(stale.state, job_id, JobSubmitted(spec=spec(), submitted_at=NOW))
        assert stale.active
        await stale.schedule()
        assert [type(d) for d in stale.decisions] == [JobAllocated]  # it tried ...
        allocations = await event_log.history(f"scns.job.{job_id}.allocated.*")
        assert [d.event for d in allocations] == successor.decisions  # ... and the log refused it
        assert stale.state.pending(job_id) is not None  # nor did it assume the refused decision
        await stale.declare_down("n1", 0.0)
        assert await event_log.last_on("scns.node.n1.down") is None
    finally:
        task.cancel()
        await stale_log.close()


async def test_a_hung_active_scheduler_is_replaced_after_the_lease(event_log):
    hung = await event_log.nc.subscribe(ACTIVE_SCHEDULER_SUBJECT)  # answers nothing, like a stopped process
    await event_log.publish(SchedulerElected(scheduler="hung", elected_at=NOW))
    standby = RecordingScheduler(event_log, lease_s=3.0)  # longer than a probe's timeout
    task = start(standby)
    try:
        await standby.caught_up.wait()
        hung_since = asyncio.get_running_loop().time()
        await eventually(lambda: standby.active, timeout=15, what="the standby to take over")
        assert asyncio.get_running_loop().time() - hung_since >= 3.0
    finally:
        task.cancel()
        await hung.unsubscribe()


async def test_a_scheduler_starts_from_a_snapshot_to_the_same_state_as_a_full_replay(event_log):
    await event_log.publish(node("n1", cpus=2))
    writer = RecordingScheduler(event_log, snapshots=SnapshotStore(event_log), snapshot_every=5)
    task = await running(writer)
    try:
        jobs = [(await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW)))[0] for _ in range(12)]
        await event_log.publish(JobFinished(job_id=jobs[0], node="n1", state="COMPLETED", exit_code="0:0",
                                            ended_at=NOW))
        # (and the job the end made room for placed: the writer stopped before its pass would leave none)
        await eventually(lambda: writer.snapshot_seq > jobs[5] and jobs[2] in writer.state.placed,
                         what="a snapshot, and the freed CPU taken")
    finally:
        task.cancel()
    snapshot = await SnapshotStore(event_log).load()
    assert snapshot is not None and 0 < snapshot.last_seq <= await event_log.last_seq()
    await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))  # after the snapshot
    restored = RecordingScheduler(event_log, snapshots=SnapshotStore(event_log))
    replayed = RecordingScheduler(event_log)
    for scheduler in (restored, replayed):
        task = asyncio.create_task(scheduler.follow_log())
        await scheduler.caught_up.wait()
        task.cancel()
    assert restored.state == replayed.state
    assert restored.state.placed.keys() == {jobs[1], jobs[2]} and len(restored.state.queues["default"]) == 10


async def test_a_snapshot_of_another_log_is_ignored(event_log):
    await event_log.publish(node("n1"))
    store = SnapshotStore(event_log)
    state = SchedulerState(last_seq=1)
    assert await store.save(state)
    assert await SnapshotStore(event_log).load() == state
    await event_log.js.delete_stream(STREAM)  # the log recreated: the snapshot is of the old one
    await event_log.ensure_stream()
    await event_log.publish(node("n1"))
    assert await SnapshotStore(event_log).load() is None


async def test_an_election_expired_from_the_log_does_not_stop_scheduling(event_log):
    await event_log.publish(node("n1"))
    scheduler = RecordingScheduler(event_log)
    task = await running(scheduler)
    try:
        await event_log.js.delete_msg(STREAM, scheduler.state.election_seq)  # as the log's retention would
        job_id, _ = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))
        await eventually(lambda: placed(event_log, job_id), what="the job placed all the same")
        elections = await event_log.history("scns.scheduler.elected")
        assert [d.event.scheduler for d in elections] == [scheduler.identity]  # it elected itself again
    finally:
        task.cancel()


async def test_a_lost_snapshot_bucket_costs_a_snapshot_not_the_scheduler(event_log):
    store = SnapshotStore(event_log)
    assert await store.save(SchedulerState(last_seq=0))
    await event_log.js.delete_object_store(SNAPSHOTS_BUCKET)
    assert not await store.save(SchedulerState(last_seq=0))  # refused, reported, not raised
    assert await store.save(SchedulerState(last_seq=0))  # and the next one makes the bucket again


async def test_an_expired_election_does_not_stop_a_silent_node_being_declared_down(event_log):
    scheduler = Scheduler(event_log, fifo_first_fit, node_timeout_s=0.5, lease_s=1.0)
    task = asyncio.create_task(until_stopped(asyncio.Event(), scheduler.follow_log(), scheduler.contend(),
                                             scheduler.watch_heartbeats()))
    try:
        await eventually(lambda: scheduler.active, what="the scheduler to be active")
        await event_log.js.delete_msg(STREAM, scheduler.state.election_seq)  # as the log's retention would
        await event_log.publish(node("n1"))  # and then never a heartbeat: nothing else to decide
        await eventually(lambda: event_log.last_on("scns.node.n1.down"), what="the silent node declared down")
    finally:
        task.cancel()


async def test_schedulers_live_through_a_hung_nats_server(event_log, nats_server):
    standby_log = await JetStreamEventLog.connect(nats_server.url, "standby")
    active, standby = RecordingScheduler(event_log), RecordingScheduler(standby_log)
    tasks = [await running(active), start(standby)]
    try:
        await standby.caught_up.wait()
        nats_server.process.send_signal(signal.SIGSTOP)  # connections stay open; nothing answers
        try:
            await asyncio.sleep(8)  # past the lease, and past a JetStream request's timeout
        finally:
            nats_server.process.send_signal(signal.SIGCONT)
        await event_log.publish(node("n1"))
        job_id, _ = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))
        await eventually(lambda: placed(event_log, job_id), what="the job placed after the hang")
        assert not any(task.done() for task in tasks)  # neither crashed (a standby used to)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await standby_log.close()
