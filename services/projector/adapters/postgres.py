"""The read model in PostgreSQL: its schema, and batches of events applied with their position."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.projector.core.statements import statements
from shared.events import AnyEvent

SCHEMA = """
create table if not exists jobs (
    job_id bigint primary key,
    name text not null,
    account text not null,
    partition text not null,
    state text not null,
    cwd text not null,
    stdout_path text not null,
    stderr_path text not null,
    ntasks_per_node int not null,
    cpus_per_task int not null,
    memory_mb bigint not null,
    time_limit_s bigint not null,
    exclusive boolean not null,
    data_source text not null,
    node text not null default '',
    allocated_cpus int not null default 0,
    allocated_memory_mb bigint not null default 0,
    exit_code text not null default ':',
    error_msg text,
    cancel_requested boolean not null default false,
    submit_time timestamptz not null,
    start_time timestamptz,
    end_time timestamptz
);
create index if not exists jobs_by_state on jobs (state, partition, job_id);
create index if not exists jobs_by_account on jobs (account, job_id);
create table if not exists nodes (
    node_name text primary key,
    partitions text[] not null,
    arch text not null,
    total_cpus int not null,
    memory_mb bigint not null,
    state text not null,
    allocated_cpus int not null default 0,
    allocated_memory_mb bigint not null default 0,
    registered_at timestamptz not null
);
create table if not exists projection_failures (
    seq bigint primary key,
    event_type text not null,
    error text not null,
    failed_at timestamptz not null default now()
);
create table if not exists projection (
    id int primary key default 1 check (id = 1),
    last_seq bigint not null
);
insert into projection (id, last_seq) values (1, 0) on conflict (id) do nothing;
"""


class PostgresReadModel:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def migrate(self) -> None:
        async with self.pool.connection() as conn:
            # One migrator at a time, should two projectors start together.
            await conn.execute("select pg_advisory_xact_lock(7310)")
            await conn.execute(SCHEMA)

    async def position(self) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("select last_seq from projection where id = 1")).fetchone()
            return row[0] if row else 0

    async def apply_one_by_one(self, batch: Sequence[tuple[int, AnyEvent | None]]) -> int:
        """Apply a batch that failed as a whole, one event per transaction: an event the read model
        cannot take (a bug, or data no validation foresaw) is recorded in projection_failures and
        passed over, instead of holding up every event after it."""
        position = 0
        for item in batch:
            try:
                position = await self.apply([item])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as error:
                seq, event = item
                async with self.pool.connection() as conn, conn.transaction():
                    await conn.execute(
                        "insert into projection_failures (seq, event_type, error) values (%s, %s, %s)"
                        " on conflict (seq) do nothing", (seq, type(event).__name__, str(error)))
                    await conn.execute("update projection set last_seq = greatest(last_seq, %s) where id = 1", (seq,))
                position = seq
        return position

    async def apply(self, batch: Sequence[tuple[int, AnyEvent | None]]) -> int:
        """Apply the events above the stored position, and store the new one, in one transaction.

        `None` stands for a message that is not an event: it only moves the position.
        Returns the position after the batch.
        """
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute("select last_seq from projection where id = 1 for update")).fetchone()
            position = row[0]
            async with conn.pipeline():
                for seq, event in batch:
                    if seq <= position or event is None:
                        continue
                    for sql, params in statements(seq, event):
                        await conn.execute(sql, params)
            last = max([position, *(seq for seq, _ in batch)])
            await conn.execute("update projection set last_seq = %s where id = 1", (last,))
            return last
