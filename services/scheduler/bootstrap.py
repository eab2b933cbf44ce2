"""Wires the scheduler: the event log, the policy and the node timeout, from settings."""

from __future__ import annotations

import asyncio

from services.scheduler.core.policy import POLICIES
from services.scheduler.handlers import Scheduler
from shared.bus import JetStreamEventLog
from shared.config import Settings
from shared.service import until_stopped


async def main(settings: Settings, stop: asyncio.Event) -> None:
    events = await JetStreamEventLog.for_service(settings, "scns-scheduler")
    scheduler = Scheduler(events, POLICIES["fifo-first-fit"], settings.node_timeout_seconds)
    try:
        await until_stopped(stop, scheduler.follow_log(), scheduler.watch_heartbeats())
    finally:
        await events.close()
