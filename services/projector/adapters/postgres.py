"""The read model in PostgreSQL: its schema, and batches of events applied with their position.

The read model lives in the schema `scns` (readers set `search_path` to it). A rebuild fills a
fresh schema from the log and renames it into place in one transaction, so readers never see a
half-built model. The schema's version is stored with it: code with another version rebuilds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql
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
    requeue boolean not null default false,
    restarts int not null default 0,
    run_after bigint not null default 0,
    traceparent text,
    node text not null default '',
    allocated_cpus int not null default 0,
    allocated_memory_mb bigint not null default 0,
    exit_code text not null default ':',
    error_msg text,
    cancel_requested boolean not null default false,
    submit_time timestamptz not null,
    start_time timestamptz,
    end_time timestamptz,
    peak_memory_kb bigint,
    cpu_seconds double precision
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
    drained boolean not null default false,
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
    last_seq bigint not null,
    schema_version int not null
);
-- The earliest job of each partition that waits to be placed (null: none waits), so that a query's
-- reason ("Priority" behind it) is one lookup. Searched for in `jobs`, it depended on the planner's
-- guess: with most rows pending, it walked past every ended job (2 ms per query with 5,000 of them).
-- Rows are only updated, never deleted: the table stays a page, its old versions pruned in place.
create table if not exists queue_heads (
    partition text primary key,
    job_id bigint
);
create or replace function follow_queue_head() returns trigger language plpgsql as $$
begin
    if new.state = 'PENDING' and new.node = '' then
        insert into queue_heads values (new.partition, new.job_id) on conflict (partition)
            do update set job_id = excluded.job_id
            where queue_heads.job_id is null or queue_heads.job_id > excluded.job_id;
    else
        -- It left the queue. Were it the head, the next is the earliest later one: every waiting job
        -- is later than the head.
        update queue_heads set job_id = (select job_id from jobs
            where partition = old.partition and state = 'PENDING' and node = '' and job_id > old.job_id
            order by job_id limit 1)
        where partition = old.partition and job_id = old.job_id;
    end if;
    return null;
end $$;
-- The first statement of a batch: moves the position past it, or fails it as a whole when the model
-- has part of it already (a redelivery, or another projector got there first).
create or replace function advance_position(first_seq bigint, batch_last_seq bigint) returns void
language plpgsql as $$
begin
    update projection set last_seq = batch_last_seq where id = 1 and last_seq < first_seq;
    if not found then
        raise exception 'the read model has seq % already', first_seq using errcode = 'SC001';
    end if;
end $$;
create or replace trigger queue_head_on_insert after insert on jobs for each row
    when (new.state = 'PENDING' and new.node = '') execute function follow_queue_head();
create or replace trigger queue_head_on_update after update of state, node on jobs for each row
    when ((old.state = 'PENDING' and old.node = '') is distinct from (new.state = 'PENDING' and new.node = ''))
    execute function follow_queue_head();
"""
SCHEMA_VERSION = 9  # bump when SCHEMA or the statements change: the projector then rebuilds
LIVE_SCHEMA = "scns"
MIGRATION_LOCK = 7310
ALREADY_APPLIED = "SC001"  # the SQLSTATE of advance_position() refusing a batch
# A batch up to this size goes out as one query of many statements, bound on the client: one round
# trip. Pipelined, each event of a small batch cost the projector 3-4 times the CPU in psycopg. A
# larger batch (catching up, a rebuild) is pipelined: the server then plans each kind of statement
# once, where it parses and plans each statement of one query anew (a rebuild went 19,000 -> 12,000
# events/s as one query per batch).
ONE_QUERY_MAX_EVENTS = 32


def writer_pool(database_url: str, max_size: int = 4, **connection) -> AsyncConnectionPool:
    """The projector's connections, not opened yet. Autocommit, so that a batch sent as one query
    is one round trip: psycopg would otherwise begin a transaction of its own before, and the
    pool commit it after."""
    return AsyncConnectionPool(database_url, min_size=1, max_size=max_size, open=False,
                               kwargs={**connection, "autocommit": True})


class PostgresReadModel:
    def __init__(self, pool: AsyncConnectionPool, schema: str = LIVE_SCHEMA) -> None:
        self.pool = pool
        self.schema = schema

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction on this model's schema, pipelined: its statements go out together, and the
        server is waited for only where a result is read and at the commit."""
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            await conn.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(self.schema)))
            yield conn

    async def migrate(self) -> bool:
        """Create the schema and tables if missing; False when they exist with another version."""
        async with self.pool.connection() as conn, conn.transaction():
            # One migrator at a time, should two projectors start together.
            await conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema)))
            await conn.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(self.schema)))
            await conn.execute(SCHEMA)
            await conn.execute("insert into projection (id, last_seq, schema_version) values (1, 0, %s)"
                               " on conflict (id) do nothing", (SCHEMA_VERSION,))
            row = await (await conn.execute("select schema_version from projection where id = 1")).fetchone()
            return row[0] == SCHEMA_VERSION

    async def drop(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(self.schema)))

    async def position(self) -> int:
        async with self._transaction() as conn:
            row = await (await conn.execute("select last_seq from projection where id = 1")).fetchone()
            return row[0] if row else 0

    async def checksum(self) -> str:
        """A digest of every row the API reads: two models with equal digests answer alike."""
        async with self._transaction() as conn:
            row = await (await conn.execute(
                "select md5(coalesce((select string_agg(j::text, '|' order by job_id) from jobs j), '')"
                " || '#' || coalesce((select string_agg(n::text, '|' order by node_name) from nodes n), ''))"
            )).fetchone()
            return row[0]

    async def replace(self, live: PostgresReadModel) -> None:
        """Put this model in the place of `live`, in one transaction (readers see one or the other)."""
        retired = f"{live.schema}_retired"
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(retired)))
            await conn.execute(sql.SQL("alter schema {} rename to {}").format(
                sql.Identifier(live.schema), sql.Identifier(retired)))
            await conn.execute(sql.SQL("alter schema {} rename to {}").format(
                sql.Identifier(self.schema), sql.Identifier(live.schema)))
            await conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(retired)))
        self.schema = live.schema

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
                async with self._transaction() as conn:
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

        A batch the model has part of already is refused whole by its first statement; what is
        above the position is then sent again.
        """
        while batch:
            seqs = [seq for seq, _ in batch]
            query = [(sql.SQL("set local search_path to {}").format(sql.Identifier(self.schema)), None),
                     ("select advance_position(%s, %s)", (min(seqs), max(seqs))),
                     *(statement for seq, event in batch if event is not None for statement in statements(seq, event))]
            try:
                async with self.pool.connection() as conn:
                    if len(batch) <= ONE_QUERY_MAX_EVENTS:
                        cursor = psycopg.AsyncClientCursor(conn)
                        await cursor.execute(";\n".join(cursor.mogrify(text, params) for text, params in query))
                    else:
                        async with conn.pipeline(), conn.transaction():
                            for text, params in query:
                                await conn.execute(text, params)
                return max(seqs)
            except psycopg.DatabaseError as error:
                if error.sqlstate != ALREADY_APPLIED:
                    raise
            position = await self.position()
            if position < min(seqs):  # refused, yet the model has none of it: it has no position row
                raise RuntimeError(f"the read model refused the events from seq {min(seqs)} at position {position}")
            batch = [(seq, event) for seq, event in batch if seq > position]
        return await self.position()
