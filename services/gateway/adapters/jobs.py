"""The read model, as the gateway reads it (PostgreSQL, owned and written by the projector)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import class_row, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.gateway.core.metrics import BUCKETS, Histogram
from services.gateway.core.views import JobRecord, NodeRecord
from shared.events import TERMINAL_STATES
from services.gateway.errors import DependencyDown

JOB_COLUMNS = ", ".join(JobRecord.__struct_fields__)
NODE_COLUMNS = ", ".join(NodeRecord.__struct_fields__)
# Of a row of `jobs`: whether it is pending, unplaced, behind an earlier unplaced job of its
# partition (the subquery runs only for an unplaced pending job: CASE evaluates lazily).
AHEAD = ("case when state = 'PENDING' and node = '' then exists(select 1 from queue_heads head"
         " where head.partition = jobs.partition and head.job_id < jobs.job_id) else false end")
READ_MODEL_TIMEOUT_S = 2.0  # a read (connection and query) takes at most this long, else 503
POOL_SIZE = (2, 16)


def read_pool(database_url: str, schema: str) -> AsyncConnectionPool:
    """The gateway's connections to the read model, not opened yet.

    Autocommit: the gateway only reads, one statement at a time, so no transaction is left open
    that the pool would have to end (a commit or rollback: a round trip per read). No check on
    checkout either (another round trip per read): a connection that the server dropped is found
    by the read itself, which is then retried (`PostgresJobView`).
    """
    return AsyncConnectionPool(database_url, min_size=POOL_SIZE[0], max_size=POOL_SIZE[1], open=False,
                               kwargs={"options": f"-c search_path={schema}", "autocommit": True})


class PostgresJobView:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, params: tuple = (), row_type: type | None = None) -> list[Any]:
        """Run one read, bounded in time: a hung server gives a 503, not a hung request.

        The read runs in a task of its own that is left to finish (or fail) in the background on
        timeout: cancelling psycopg mid-query makes it wait for the server before giving up.
        """
        read = asyncio.ensure_future(self._run(sql, params, row_type))
        try:
            return await asyncio.wait_for(asyncio.shield(read), READ_MODEL_TIMEOUT_S)
        except TimeoutError as error:
            read.cancel()
            read.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved: no noise
            raise DependencyDown("PostgreSQL (read model) did not answer in time") from error
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise DependencyDown(f"PostgreSQL (read model) is unavailable: {error}") from error
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as error:
            # No schema, or an older one: a projector of this version rebuilds it at start and
            # swaps it in when done.
            raise DependencyDown("PostgreSQL (read model) has no schema of this version yet: is the projector "
                                 "running, and done rebuilding it?") from error

    async def _run(self, sql: str, params: tuple, row_type: type | None) -> list[Any]:
        try:
            return await self._read(sql, params, row_type)
        except psycopg.OperationalError:
            # Most likely a connection the server dropped (it restarted): its idle siblings are
            # dropped too, so the pool is checked once rather than each connection at checkout.
            # Reads are idempotent: one more try, on a sound connection.
            await self.pool.check()
            return await self._read(sql, params, row_type)

    async def _read(self, sql: str, params: tuple, row_type: type | None) -> list[Any]:
        async with self.pool.connection(timeout=READ_MODEL_TIMEOUT_S) as conn:
            cursor = conn.cursor(row_factory=class_row(row_type) if row_type else tuple_row)
            await cursor.execute(sql, params)
            return await cursor.fetchall()

    async def metrics(self) -> tuple[dict[str, int], int, dict[str, tuple[int, int]], int, dict[str, int],
                                     Histogram, Histogram]:
        """(queue depth per partition, running, node CPUs, submitted, finished per state, wait and
        run time histograms), read from the read model."""
        # Every partition a node serves, 0 when nothing waits in it.
        queued = await self._fetch(
            "select partition, count(job_id) from (select unnest(partitions) as partition, null::bigint as job_id"
            " from nodes union all select partition, job_id from jobs where state = 'PENDING' and node = '') waiting"
            " group by partition")
        states = dict(await self._fetch("select state, count(*) from jobs group by state"))
        nodes = await self._fetch("select node_name, allocated_cpus, total_cpus from nodes")
        finished = {state: states.get(state, 0) for state in TERMINAL_STATES}
        return (dict(queued), states.get("RUNNING", 0), {name: (used, total) for name, used, total in nodes},
                sum(states.values()), finished,
                await self._histogram("start_time - submit_time", "start_time is not null"),
                await self._histogram("end_time - start_time", "start_time is not null and end_time is not null"))

    async def _histogram(self, interval: str, where: str) -> Histogram:
        seconds = f"extract(epoch from {interval})"
        buckets = ", ".join(f"count(*) filter (where {seconds} <= {bound})" for bound in BUCKETS)
        row = (await self._fetch(f"select count(*), coalesce(sum({seconds}), 0), {buckets} from jobs where {where}"))[0]
        return Histogram(cumulative=tuple(row[2:]), count=row[0], total=float(row[1]))

    async def job(self, job_id: int) -> JobRecord | None:
        rows = await self._fetch(f"select {JOB_COLUMNS} from jobs where job_id = %s", (job_id,), JobRecord)
        return rows[0] if rows else None

    async def job_in_queue(self, job_id: int) -> tuple[JobRecord, bool] | None:
        """The job, and whether it waits behind an earlier job of its partition (`jobs_ahead`), in
        one round trip: what a query needs."""
        rows = await self._fetch(f"select {JOB_COLUMNS}, {AHEAD} from jobs where job_id = %s", (job_id,))
        if not rows:
            return None
        *columns, ahead = rows[0]
        return JobRecord(**dict(zip(JobRecord.__struct_fields__, columns))), ahead

    async def queue_heads(self) -> dict[str, int]:
        """The earliest job waiting to be placed, of each partition where one waits."""
        return dict(await self._fetch("select partition, job_id from queue_heads where job_id is not null"))

    async def jobs(self, *, account: str | None = None, state: str | None = None, partition: str | None = None,
                   before: int | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first; `before` continues a listing below a job id (keyset paging: stable under submits)."""
        conditions, params = [], []
        for column, value in (("account", account), ("state", state), ("partition", partition)):
            if value is not None:
                conditions.append(f"{column} = %s")
                params.append(value)
        if before is not None:
            conditions.append("job_id < %s")
            params.append(before)
        where = f"where {' and '.join(conditions)}" if conditions else ""
        return await self._fetch(f"select {JOB_COLUMNS} from jobs {where} order by job_id desc limit %s",
                                 (*params, limit), JobRecord)

    async def state_counts(self, account: str | None = None) -> dict[str, int]:
        if account is None:
            return dict(await self._fetch("select state, count(*) from jobs group by state"))
        return dict(await self._fetch("select state, count(*) from jobs where account = %s group by state",
                                      (account,)))

    async def nodes(self) -> list[NodeRecord]:
        return await self._fetch(f"select {NODE_COLUMNS} from nodes order by node_name", (), NodeRecord)

    async def position(self) -> int:
        """The log sequence the read model has applied up to."""
        rows = await self._fetch("select last_seq from projection where id = 1")
        return rows[0][0] if rows else 0
