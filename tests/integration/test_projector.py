import asyncio
import random
from contextlib import asynccontextmanager

import psycopg
import pytest

from services.projector.adapters.postgres import ONE_QUERY_MAX_EVENTS, PostgresReadModel, writer_pool
from services.projector.handlers import Projector
from shared.bus import LogBehindReadModel
from shared.events import JobAllocated, JobCancelled, JobFinished, JobRequeued, JobStarted, JobSubmitted

from ..conftest import eventually
from .helpers import NOW, node, spec

pytestmark = pytest.mark.integration


@pytest.fixture
async def read_model(database):
    pool = writer_pool(database, max_size=2, options="-c search_path=scns")
    await pool.open()
    model = PostgresReadModel(pool)
    await model.migrate()
    await model.migrate()  # idempotent
    yield model
    await pool.close()


def life_of_one_job():
    return [
        (1, node("n1", cpus=4)),
        (2, JobSubmitted(spec=spec(cpus_per_task=3), submitted_at=NOW)),
        (3, JobAllocated(job_id=2, node="n1", cpus=3, memory_mb=100, allocated_at=NOW)),
        (4, JobStarted(job_id=2, node="n1", pid=1, started_at=NOW)),
    ]


async def snapshot(model):
    async with model.pool.connection() as conn:
        job = await (await conn.execute("select state, node, allocated_cpus, exit_code from jobs")).fetchall()
        nodes = await (await conn.execute("select node_name, allocated_cpus, state from nodes")).fetchall()
        return job, nodes


async def test_events_become_rows_and_a_redelivered_batch_changes_nothing(read_model):
    assert await read_model.apply(life_of_one_job()) == 4
    assert await snapshot(read_model) == ([("RUNNING", "n1", 3, ":")], [("n1", 3, "UP")])
    await read_model.apply(life_of_one_job())  # redelivery
    assert await snapshot(read_model) == ([("RUNNING", "n1", 3, ":")], [("n1", 3, "UP")])
    finished = JobFinished(job_id=2, node="n1", state="FAILED", exit_code="3:0", error_msg="Exited with code 3",
                           ended_at=NOW)
    await read_model.apply([(5, finished)])
    await read_model.apply([(5, finished), (6, finished)])  # again, and once more under a new sequence
    assert await snapshot(read_model) == ([("FAILED", "n1", 3, "3:0")], [("n1", 0, "UP")])
    assert await read_model.position() == 6


@pytest.mark.parametrize("jobs", [10, 4 * ONE_QUERY_MAX_EVENTS], ids=["as one query", "pipelined"])
async def test_two_writers_sending_overlapping_batches_at_once_apply_each_event_once(database, read_model, jobs):
    """Say a projector started before the last one stopped: both read the log from the same
    position, one further than the other. Whichever batch moves the position first is applied; of
    the other, only the events above it."""
    submitted = [(seq, JobSubmitted(spec=spec(), submitted_at=NOW)) for seq in range(2, jobs + 2)]
    await read_model.apply([(1, node("n1", cpus=1000)), *submitted])
    allocations = [(seq + jobs, JobAllocated(job_id=seq, node="n1", cpus=1, memory_mb=1, allocated_at=NOW))
                   for seq, _ in submitted]  # each adds its CPU to the node's count: twice would show
    async with writer_pool(database, options="-c search_path=scns") as other_pool:
        other_writer = PostgresReadModel(other_pool)
        await asyncio.gather(read_model.apply(allocations[:jobs * 7 // 10]), other_writer.apply(allocations))
    async with read_model.pool.connection() as conn:
        allocated = await (await conn.execute("select allocated_cpus from nodes")).fetchone()
        placed = await (await conn.execute("select count(*) from jobs where node = 'n1'")).fetchone()
    assert (allocated, placed) == ((jobs,), (jobs,))
    assert await read_model.position() == 2 * jobs + 1


async def test_a_batch_the_server_refuses_in_part_leaves_nothing_behind(read_model):
    """A batch is one transaction though its statements go out as one query: a statement the server
    refuses undoes those before it, the position included (else its events would be passed over)."""
    overflowing = JobAllocated(job_id=2, node="n1", cpus=2**31, memory_mb=1, allocated_at=NOW)  # no int holds it
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        await read_model.apply([(1, node("n1")), (2, JobSubmitted(spec=spec(), submitted_at=NOW)), (3, overflowing)])
    assert await read_model.position() == 0
    assert await snapshot(read_model) == ([], [])


async def test_a_requeued_job_is_pending_again_and_a_late_start_of_its_old_run_changes_nothing(read_model):
    old_run = JobStarted(job_id=2, node="n1", pid=1, started_at=NOW)
    await read_model.apply([
        *life_of_one_job(),
        (5, JobRequeued(job_id=2, node="n1", reason="lost", requeued_at=NOW)),
    ])
    assert await snapshot(read_model) == ([("PENDING", "", 0, ":")], [("n1", 0, "UP")])
    await read_model.apply([
        (6, JobAllocated(job_id=2, node="n1", cpus=3, memory_mb=100, allocated_at=NOW, end_after=5)),
        (7, old_run),  # delayed by an outage: the first run's start, on the same node
    ])
    assert await snapshot(read_model) == ([("PENDING", "n1", 3, ":")], [("n1", 3, "UP")])
    await read_model.apply([(8, JobStarted(job_id=2, node="n1", pid=2, started_at=NOW, end_after=5))])
    assert await snapshot(read_model) == ([("RUNNING", "n1", 3, ":")], [("n1", 3, "UP")])
    async with read_model.pool.connection() as conn:
        assert await (await conn.execute("select requeue, restarts from jobs")).fetchone() == (False, 1)


async def test_a_terminal_state_is_never_overwritten(read_model):
    cancelled_then_finished = [
        (1, JobSubmitted(spec=spec(), submitted_at=NOW)),
        (2, JobFinished(job_id=1, node="n1", state="CANCELLED", exit_code="0:15", ended_at=NOW)),
        (3, JobFinished(job_id=1, node="n1", state="FAILED", exit_code="1:0", ended_at=NOW)),
        (4, JobStarted(job_id=1, node="n1", pid=1, started_at=NOW)),
    ]
    await read_model.apply(cancelled_then_finished)
    (rows, _) = await snapshot(read_model)
    assert rows == [("CANCELLED", "", 0, "0:15")]


def random_life_of_two_queues(rng: random.Random, count: int) -> list[tuple[int, object]]:
    """Jobs of two partitions submitted, placed, cancelled, requeued and ended in random order."""
    events, waiting, placed = [(1, node("n1", cpus=4))], set(), set()
    for seq in range(2, count + 2):
        choices = ["submit"] + ["place", "cancel"] * bool(waiting) + ["requeue", "end"] * bool(placed)
        match rng.choice(choices):
            case "submit":
                event = JobSubmitted(spec=spec(partition=rng.choice(["a", "b"])), submitted_at=NOW)
                waiting.add(seq)
            case "place":
                job_id = rng.choice(sorted(waiting))
                event = JobAllocated(job_id=job_id, node="n1", cpus=1, memory_mb=1, allocated_at=NOW)
                waiting.remove(job_id)
                placed.add(job_id)
            case "cancel":
                job_id = rng.choice(sorted(waiting))
                event = JobCancelled(job_id=job_id, cancelled_at=NOW)
                waiting.remove(job_id)
            case "requeue":
                job_id = rng.choice(sorted(placed))
                event = JobRequeued(job_id=job_id, node="n1", reason="lost", requeued_at=NOW)
                placed.remove(job_id)
                waiting.add(job_id)
            case "end":
                job_id = rng.choice(sorted(placed))
                event = JobFinished(job_id=job_id, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW)
                placed.remove(job_id)
        events.append((seq, event))
    return events


@pytest.mark.parametrize("seed", range(3))
async def test_the_head_of_each_queue_is_its_earliest_waiting_job_after_every_batch(read_model, seed):
    rng = random.Random(seed)
    events = random_life_of_two_queues(rng, 400)
    heads_seen, position = set(), 0
    while position < len(events):
        batch = events[position:position + rng.randint(1, 12)]
        position += len(batch)
        await read_model.apply(batch)
        async with read_model.pool.connection() as conn:
            kept = await (await conn.execute(
                "select partition, job_id from queue_heads where job_id is not null order by 1")).fetchall()
            earliest = await (await conn.execute(
                "select partition, min(job_id) from jobs where state = 'PENDING' and node = ''"
                " group by partition order by 1")).fetchall()
        assert kept == earliest, batch
        heads_seen.update(kept)
    assert len(heads_seen) > 20  # the heads moved: placed, cancelled and requeued ones among them


async def test_projector_follows_the_log_and_resumes_from_its_position(event_log, read_model):
    for _, event in life_of_one_job():
        await event_log.publish(event)
    first = asyncio.create_task(Projector(event_log, read_model).follow_log())
    await eventually(lambda: _at(read_model, 4), what="projection of 4 events")
    first.cancel()
    await event_log.publish(JobFinished(job_id=2, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW))
    second = asyncio.create_task(Projector(event_log, read_model).follow_log())
    try:
        await eventually(lambda: _at(read_model, 5), what="projection after a restart")
        assert await snapshot(read_model) == ([("COMPLETED", "n1", 3, "0:0")], [("n1", 0, "UP")])
    finally:
        second.cancel()


async def _at(model, seq):
    return await model.position() >= seq



async def test_an_event_the_read_model_cannot_take_is_set_aside_not_blocking(event_log, read_model):
    """Data no validation foresaw (here a NUL, which PostgreSQL text refuses) must not stall the
    projection of every event after it."""
    poison = JobSubmitted(spec=spec(name="bad\x00name"), submitted_at=NOW)
    for event in (node("n1"), poison, JobSubmitted(spec=spec(), submitted_at=NOW)):
        await event_log.publish(event)
    task = asyncio.create_task(Projector(event_log, read_model).follow_log())
    try:
        await eventually(lambda: _at(read_model, 3), what="the projection past the poison event")
    finally:
        task.cancel()
    async with read_model.pool.connection() as conn:
        failures = await (await conn.execute("select seq, event_type from projection_failures")).fetchall()
        jobs = await (await conn.execute("select job_id from jobs")).fetchall()
    assert failures == [(2, "JobSubmitted")] and jobs == [(3,)]


@asynccontextmanager
async def projecting_one_job(event_log, read_model):
    """A running projector that has applied the life of one job (4 events)."""
    for _, event in life_of_one_job():
        await event_log.publish(event)
    projector = Projector(event_log, read_model)
    task = asyncio.create_task(projector.run())
    try:
        await eventually(lambda: _at(read_model, 4), what="the live projection")
        yield projector
    finally:
        task.cancel()


async def test_rebuild_equals_the_live_model_and_a_new_schema_version_rebuilds_at_start(event_log, read_model):
    async with projecting_one_job(event_log, read_model) as projector:
        live = await read_model.checksum()
        report = await projector.rebuild()
        assert (report.events, report.position, report.equal_to_live) == (4, 4, True)
        assert await read_model.checksum() == live == report.checksum
        await event_log.publish(JobFinished(job_id=2, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW))
        await eventually(lambda: _at(read_model, 5), what="the live projection resumed after the rebuild")
    # A model written by other code (another schema version) is rebuilt when the projector starts.
    async with read_model.pool.connection() as conn:
        await conn.execute("update projection set schema_version = -1, last_seq = 0")
        await conn.execute("delete from jobs")
    task = asyncio.create_task(Projector(event_log, read_model).run())
    try:
        await eventually(lambda: _at(read_model, 5), what="the rebuild at start")
        assert await snapshot(read_model) == ([("COMPLETED", "n1", 3, "0:0")], [("n1", 0, "UP")])
    finally:
        task.cancel()


@pytest.mark.parametrize("version", ["current", "older"])
async def test_a_log_behind_the_read_model_is_refused_so_job_ids_are_never_reused(event_log, read_model, version):
    async with read_model.pool.connection() as conn:
        await conn.execute("update projection set last_seq = 500")  # as if the stream was recreated
        if version == "older":  # and a rebuild due: it must not wait for events that will never come
            await conn.execute("update projection set schema_version = -1")
    await event_log.publish(node("n1"))
    with pytest.raises(LogBehindReadModel, match="reuse old ids"):
        await asyncio.wait_for(Projector(event_log, read_model).run(), 30)


async def test_a_rebuild_that_would_lose_history_is_refused_and_the_live_model_kept(event_log, read_model):
    async with projecting_one_job(event_log, read_model) as projector:
        before = await snapshot(read_model)
        await event_log.js.purge_stream("SCNS", seq=3)  # as retention would: seqs 1-2 expire
        report = await projector.rebuild()
        assert report.error and "expired" in report.error
        assert await snapshot(read_model) == before
