"""Wires the projector: the event log and the PostgreSQL read model, from settings."""

from __future__ import annotations

import asyncio

from services.projector.adapters.postgres import PostgresReadModel, writer_pool
from services.projector.handlers import Projector
from shared.bus import JetStreamEventLog
from shared.config import Settings
from shared.service import until_stopped


async def main(settings: Settings, stop: asyncio.Event) -> None:
    events = await JetStreamEventLog.for_service(settings, "scns-projector")
    pool = writer_pool(settings.database_url)
    await pool.open(wait=True, timeout=60)
    try:
        await until_stopped(stop, Projector(events, PostgresReadModel(pool)).run())
    finally:
        await pool.close()
        await events.close()
