"""The projector's loop: read the log from the stored position on, apply it in batches."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from services.projector.adapters.postgres import PostgresReadModel
from shared.bus import JetStreamEventLog, decode_message
from shared.events import AnyEvent

log = logging.getLogger(__name__)

MAX_BATCH = 500


class Projector:
    def __init__(self, events: JetStreamEventLog, model: PostgresReadModel) -> None:
        self.events = events
        self.model = model

    async def follow_log(self) -> None:
        position = await self.model.position()
        batch: list[tuple[int, AnyEvent | None]] = []
        async for msg in self.events.replay(position + 1):
            delivered = decode_message(msg)
            batch.append((msg.metadata.sequence.stream, delivered.event if delivered else None))
            # Apply when the reader is at the tip, or the batch is full: batches grow under load.
            if msg.metadata.num_pending == 0 or len(batch) >= MAX_BATCH:
                await self._apply_until_done(batch)
                batch.clear()

    async def _apply_until_done(self, batch: list[tuple[int, AnyEvent | None]]) -> None:
        delay = 0.1
        while True:
            try:
                try:
                    await self.model.apply(batch)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as error:
                    log.error("a batch failed (%s); applying it event by event", error)
                    await self.model.apply_one_by_one(batch)
                return
            except psycopg.OperationalError as error:  # an outage: keep the batch and wait
                log.warning("read model unavailable (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
