"""The projector: read the log from the stored position on, apply it in batches; rebuild on demand.

A rebuild replays the whole log into a fresh schema while the live read model keeps answering
queries, compares the two at the same log position (their checksums must be equal), catches the
fresh one up to the tip and swaps it in. The live loop pauses meanwhile: queries are answered
from the live model, a little behind, and never from a half-built one.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import psycopg
from opentelemetry.trace import SpanKind

from services.projector.adapters.postgres import PostgresReadModel
from shared.bus import JetStreamEventLog, at_tip, decode_message, is_request
from shared.events import STREAM, AnyEvent
from shared.rpc import REBUILD_SUBJECT, RebuildReport
from shared.telemetry import TRACEPARENT, context_of, tracer

log = logging.getLogger(__name__)

MAX_BATCH = 500
REBUILD_BATCH = 2000
REBUILD_SCHEMA = "scns_rebuild"

Batch = list[tuple[int, AnyEvent | None]]


class Projector:
    def __init__(self, events: JetStreamEventLog, model: PostgresReadModel) -> None:
        self.events = events
        self.model = model
        self._rebuilding = asyncio.Lock()
        self._live: asyncio.Task | None = None

    async def run(self) -> None:
        """The live loop, a rebuild first when the schema is of another version, and rebuild requests."""
        current = await self.model.migrate()
        await self.events.check_not_behind(await self.model.position())
        if not current:
            log.warning("the read model's schema is of another version: rebuilding it from the log")
            report = await self.rebuild(compare=False)
            if report.error:
                raise RuntimeError(f"the read model cannot be rebuilt: {report.error}")

        async def on_request(msg) -> None:
            if not is_request(msg):
                log.warning("ignoring a rebuild request with reply subject %r (not an inbox)", msg.reply)
                return
            try:
                report = await self.rebuild()
                await msg.respond(msgspec.json.encode(report))
            except Exception as error:  # the caller gets the reason; the projector goes on
                log.exception("rebuild failed")
                await msg.respond(msgspec.json.encode(RebuildReport(error=str(error))))

        sub = await self.events.nc.subscribe(REBUILD_SUBJECT, cb=on_request)
        try:
            while True:
                self._live = asyncio.create_task(self.follow_log())
                await asyncio.wait([self._live])
                if not self._live.cancelled():
                    self._live.result()  # it failed: let the service stop with its error
                async with self._rebuilding:  # a rebuild paused it: resume once the rebuild is done
                    pass
        finally:
            if self._live:
                self._live.cancel()
            await sub.unsubscribe()

    async def follow_log(self) -> None:
        position = await self.model.position()
        batch: Batch = []
        traced: list[tuple[str, dict[str, str]]] = []  # (event type, headers) of the batch's traced events
        async for messages in self.events.arrivals(position + 1):
            for msg in messages:
                delivered = decode_message(msg)
                batch.append((msg.metadata.sequence.stream, delivered.event if delivered else None))
                if delivered and msg.headers and TRACEPARENT in msg.headers:
                    traced.append((type(delivered.event).__name__, msg.headers))
                # Apply at the tip, all that came while the last batch was applied; or when the batch
                # is full: batches grow under load.
                if at_tip(msg, messages) or len(batch) >= MAX_BATCH:
                    applying = time.time_ns()
                    await self._apply_until_done(self.model, batch)
                    for event_type, headers in traced:  # each a child of the span that published the event
                        tracer().start_span(f"project {event_type}", context=context_of(headers),
                                            kind=SpanKind.CONSUMER, start_time=applying).end()
                    batch.clear()
                    traced.clear()

    async def rebuild(self, compare: bool = True) -> RebuildReport:
        """Replay the whole log into a fresh schema and swap it in. With `compare` (a model of the
        same version is live), the two must be equal at the same log position, else nothing is
        swapped and the report says so."""
        async with self._rebuilding:
            first_seq = (await self.events.js.stream_info(STREAM)).state.first_seq
            if first_seq > 1:
                return RebuildReport(error=f"the log starts at seq {first_seq} (older events expired): "
                                           f"a rebuild would lose the jobs before it")
            if self._live is not None and not self._live.done():
                self._live.cancel()  # each batch is one transaction: a cancelled one rolls back
                await asyncio.gather(self._live, return_exceptions=True)
            started = time.monotonic()
            fresh = PostgresReadModel(self.model.pool, REBUILD_SCHEMA)
            await fresh.drop()
            await fresh.migrate()
            live_position = min(await self._live_position(self.model), await self.events.last_seq())
            replayed = await self._replay_into(fresh, 1, live_position)
            equal = None
            if compare and live_position:  # compare both at the same log position
                equal = await fresh.checksum() == await self.model.checksum()
                if not equal:
                    log.error("the rebuilt read model differs from the live one at seq %d: not swapped",
                              live_position)
                    await fresh.drop()
                    return RebuildReport(events=replayed, position=live_position, equal_to_live=False,
                                         error=f"the rebuilt read model differs from the live one at seq "
                                               f"{live_position}; the live one is kept")
            replayed += await self._replay_into(fresh, live_position + 1, await self.events.last_seq())
            checksum = await fresh.checksum()
            await fresh.replace(self.model)
            seconds = time.monotonic() - started
            log.info("read model rebuilt: %d events in %.1f s", replayed, seconds)
            return RebuildReport(events=replayed, seconds=round(seconds, 3),
                                 events_per_second=round(replayed / seconds, 1) if seconds else 0.0,
                                 position=await fresh.position(), checksum=checksum, equal_to_live=equal)

    @staticmethod
    async def _live_position(model: PostgresReadModel) -> int:
        """The live model's position, or 0 when it has no tables yet."""
        try:
            return await model.position()
        except psycopg.errors.UndefinedTable:
            return 0

    async def _replay_into(self, model: PostgresReadModel, start: int, until: int) -> int:
        """Apply the log's events from `start` to `until` (inclusive) to `model`; how many."""
        if until < start:
            return 0
        batch: Batch = []
        count = 0
        async for msg in self.events.replay(start):
            seq = msg.metadata.sequence.stream
            delivered = decode_message(msg)
            batch.append((seq, delivered.event if delivered else None))
            if len(batch) >= REBUILD_BATCH or seq >= until or msg.metadata.num_pending == 0:
                await self._apply_until_done(model, batch)
                count += len(batch)
                batch.clear()
            if seq >= until:
                break
        return count

    @staticmethod
    async def _apply_until_done(model: PostgresReadModel, batch: Batch) -> None:
        delay = 0.1
        while True:
            try:
                try:
                    await model.apply(batch)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as error:
                    log.error("a batch failed (%s); applying it event by event", error)
                    await model.apply_one_by_one(batch)
                return
            except psycopg.OperationalError as error:  # an outage: keep the batch and wait
                log.warning("read model unavailable (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
