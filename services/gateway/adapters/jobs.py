"""The read model, as the gateway reads it (PostgreSQL, owned and written by the projector)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.gateway.core.views import JobRecord
from services.gateway.errors import DependencyDown

JOB_COLUMNS = ", ".join(JobRecord.__struct_fields__)


class PostgresJobView:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with self.pool.connection(timeout=5) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise DependencyDown(f"PostgreSQL (read model) is unavailable: {error}") from error

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

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("select 1")
