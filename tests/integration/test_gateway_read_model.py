"""The gateway's reads of the read model (PostgresJobView) against a real PostgreSQL, filled by the
projector's own adapter."""

import psycopg
import pytest

from services.gateway.adapters.jobs import PostgresJobView, read_pool
from services.gateway.core.views import waits_behind
from services.gateway.errors import DependencyDown
from services.projector.adapters.postgres import PostgresReadModel, writer_pool
from shared.events import JobAllocated, JobSubmitted

from .helpers import NOW, node, spec

pytestmark = pytest.mark.integration

SCHEMA = "scns"


@pytest.fixture
async def view(database):
    writer = writer_pool(database, max_size=1, options=f"-c search_path={SCHEMA}")
    await writer.open()
    model = PostgresReadModel(writer)
    await model.migrate()
    await model.apply([
        (1, node("n1", cpus=1)),
        (2, JobSubmitted(spec=spec(), submitted_at=NOW)),
        (3, JobSubmitted(spec=spec(), submitted_at=NOW)),
        (4, JobSubmitted(spec=spec(), submitted_at=NOW)),
        (5, JobSubmitted(spec=spec(partition="other"), submitted_at=NOW)),
        (6, JobAllocated(job_id=2, node="n1", cpus=1, memory_mb=100, allocated_at=NOW)),
    ])
    await writer.close()
    pool = read_pool(database, SCHEMA)
    await pool.open()
    yield PostgresJobView(pool)
    await pool.close()


async def test_a_job_and_whether_it_waits_behind_another_come_in_one_read_as_from_the_queue_heads(view):
    # 2 is placed; 3 is the first unplaced one of its partition; 4 waits behind 3; 5 is alone in its partition.
    expected = {2: False, 3: False, 4: True, 5: False}
    heads = await view.queue_heads()
    assert heads == {"default": 3, "other": 5}
    for job_id, ahead in expected.items():
        job, jobs_ahead = await view.job_in_queue(job_id)
        assert job == await view.job(job_id)
        assert jobs_ahead is ahead and waits_behind(job, heads) is ahead, job_id
    assert (await view.job_in_queue(2))[0].node == "n1"
    assert await view.job_in_queue(99) is None


@pytest.mark.parametrize("older", ["drop table queue_heads", "alter table jobs drop column restarts"])
async def test_a_read_model_of_an_older_version_is_unavailable_not_an_error(view, database, older):
    # What a new gateway meets while the projector still rebuilds the read model to its version.
    with psycopg.connect(database, autocommit=True, options=f"-c search_path={SCHEMA}") as admin:
        admin.execute(older)
    with pytest.raises(DependencyDown, match="no schema of this version yet"):
        await view.job_in_queue(4)


async def test_reads_survive_connections_the_server_dropped(view, database):
    await view.job(2)
    with psycopg.connect(database, autocommit=True) as admin:  # what a restart of PostgreSQL does to them
        dropped = admin.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity"
                                " where datname = current_database() and pid <> pg_backend_pid()").fetchone()[0]
    assert dropped >= 1
    for _ in range(4):  # every connection of the pool was dropped, not only the first one taken
        assert (await view.job(3)).job_id == 3
        assert await view.position() == 6


async def test_the_read_connections_hold_no_transaction_open(view):
    async with view.pool.connection() as conn:
        assert conn.autocommit
    await view.job(2)
    async with view.pool.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
