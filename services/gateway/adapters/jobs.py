"""The read model, as the gateway reads it (PostgreSQL, owned and written by the projector)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.gateway.core.views import JobRecord, NodeRecord
from services.gateway.errors import DependencyDown

JOB_COLUMNS = ", ".join(JobRecord.__struct_fields__)
READ_MODEL_TIMEOUT_S = 2.0  # a read (connection and query) takes at most this long, else 503
NODE_COLUMNS = ", ".join(NodeRecord.__struct_fields__)


class PostgresJobView:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection for one read; the whole read is bounded, so a hung server gives a 503."""
        try:
            async with asyncio.timeout(READ_MODEL_TIMEOUT_S), self.pool.connection() as conn:
                yield conn
        except TimeoutError as error:
            raise DependencyDown("PostgreSQL (read model) did not answer in time") from error
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise DependencyDown(f"PostgreSQL (read model) is unavailable: {error}") from error
        except psycopg.errors.UndefinedTable as error:
            raise DependencyDown("PostgreSQL (read model) has no schema yet: is the projector running?") from error

    async def job(self, job_id: int) -> JobRecord | None:
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=class_row(JobRecord))
            await cursor.execute(f"select {JOB_COLUMNS} from jobs where job_id = %s", (job_id,))
            return await cursor.fetchone()

    async def jobs_ahead(self, job: JobRecord) -> bool:
        """Whether an earlier job of the same partition is still waiting to be placed."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                "select exists(select 1 from jobs where partition = %s and state = 'PENDING' and node = ''"
                " and job_id < %s)", (job.partition, job.job_id))
            return (await cursor.fetchone())[0]

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
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=class_row(JobRecord))
            await cursor.execute(f"select {JOB_COLUMNS} from jobs {where} order by job_id desc limit %s",
                                 (*params, limit))
            return await cursor.fetchall()

    async def state_counts(self, account: str | None = None) -> dict[str, int]:
        async with self._connection() as conn:
            if account is None:
                cursor = await conn.execute("select state, count(*) from jobs group by state")
            else:
                cursor = await conn.execute("select state, count(*) from jobs where account = %s group by state",
                                            (account,))
            return dict(await cursor.fetchall())

    async def nodes(self) -> list[NodeRecord]:
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=class_row(NodeRecord))
            await cursor.execute(f"select {NODE_COLUMNS} from nodes order by node_name")
            return await cursor.fetchall()

    async def position(self) -> int:
        """The log sequence the read model has applied up to."""
        async with self._connection() as conn:
            row = await (await conn.execute("select last_seq from projection where id = 1")).fetchone()
            return row[0] if row else 0
