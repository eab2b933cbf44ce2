"""Wires the scheduler: the event log, its snapshots, the policy and the timeouts, from settings."""

from __future__ import annotations

import asyncio

from services.scheduler.core.policy import POLICIES
from services.scheduler.handlers import Scheduler
from services.scheduler.snapshots import SnapshotStore
from shared.bus import JetStreamEventLog
from shared.config import Settings
from shared.service import until_stopped


async def main(settings: Settings, stop: asyncio.Event) -> None:
    events = await JetStreamEventLog.for_service(settings, "scns-scheduler", keeper=True)
    scheduler = Scheduler(
        events, POLICIES["fifo-first-fit"], settings.node_timeout_seconds,
        lease_s=settings.scheduler_lease_seconds,
        snapshots=SnapshotStore(events, settings.stream_replicas), snapshot_every=settings.snapshot_every_events,
    )
    try:
        await until_stopped(stop, scheduler.follow_log(), scheduler.contend(), scheduler.watch_heartbeats())
    finally:
        await events.close()
