"""The scheduler's adapter loop: fold the log, and after catching up, decide and publish.

Event-driven: every event read from the log may change what fits, so a pass runs as soon as
the reader is at the tip of the log (no polling interval). Node liveness comes from heartbeats
on core NATS; a node silent for longer than the timeout is declared down (an event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from services.scheduler.core.policy import Decision, Policy
from services.scheduler.core.state import SchedulerState, assume, evolve
from shared.bus import NATS_UNAVAILABLE, JetStreamEventLog, decode_message
from shared.events import HEARTBEAT_SUBJECT, JobAllocated, NodeDown

log = logging.getLogger(__name__)

MAX_EVENTS_PER_PASS = 500


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def msg_id_of(decision: Decision) -> str:
    return f"{type(decision).__name__}:{decision.job_id}"


class Scheduler:
    def __init__(
        self,
        events: JetStreamEventLog,
        policy: Policy,
        node_timeout_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.events = events
        self.policy = policy
        self.node_timeout_s = node_timeout_s
        self.clock = clock
        self.state = SchedulerState()
        self.caught_up = asyncio.Event()
        self.decided_through = 0  # the log position of the last completed pass
        self.last_heartbeat: dict[str, float] = {}

    async def follow_log(self) -> None:
        target = await self.events.last_seq()
        if target == 0:
            self.caught_up.set()
        read_since_pass = 0
        async for msg in self.events.replay(self.state.last_seq + 1):
            delivered = decode_message(msg)
            seq = msg.metadata.sequence.stream
            if delivered is not None:
                evolve(self.state, seq, delivered.event, delivered.stored_at)
            else:
                self.state.last_seq = seq
            if not self.caught_up.is_set() and seq >= target:
                log.info("caught up with the log at seq %d: %d nodes, %d jobs placed", seq,
                         len(self.state.nodes), len(self.state.placed))
                self.caught_up.set()
            read_since_pass += 1
            # At the tip of the log, or at least every so often under a continuous stream of events.
            if self.caught_up.is_set() and (msg.metadata.num_pending == 0 or read_since_pass >= MAX_EVENTS_PER_PASS):
                await self.schedule()
                read_since_pass = 0
                self.decided_through = seq

    async def schedule(self) -> None:
        """One pass: publish each decision, then take it into the state at once."""
        for decision in self.policy(self.state, self.clock()):
            await self.publish(decision)
            assume(self.state, decision)

    async def publish(self, decision: Decision) -> None:
        if isinstance(decision, JobAllocated):
            await self.events.publish_until_acked(decision, msg_id_of(decision))
        elif await self.events.publish_end(decision, msg_id_of(decision)) is None:
            log.info("job %d had ended already: %s not recorded", decision.job_id, type(decision).__name__)

    async def watch_heartbeats(self) -> None:
        """Declare down a node whose heartbeats stopped; never because our own NATS link was down."""

        async def on_heartbeat(msg) -> None:
            self.last_heartbeat[msg.subject.rsplit(".", 1)[-1]] = time.monotonic()

        nc = self.events.nc
        sub = await nc.subscribe(HEARTBEAT_SUBJECT.format(node="*"), cb=on_heartbeat)
        try:
            await self.caught_up.wait()
            heard_since = time.monotonic()  # silence before this does not count
            reconnects = nc.stats["reconnects"]
            while True:
                await asyncio.sleep(self.node_timeout_s / 3)
                now = time.monotonic()
                if not nc.is_connected or nc.stats["reconnects"] != reconnects:
                    # Heartbeats could not reach us: start counting again once connected.
                    reconnects, heard_since = nc.stats["reconnects"], now
                    continue
                for node in list(self.state.nodes.values()):
                    silent_since = max(self.last_heartbeat.get(node.name, heard_since), heard_since)
                    if node.alive and now - silent_since > self.node_timeout_s:
                        await self.declare_down(node.name, now)
        finally:
            await sub.unsubscribe()

    async def declare_down(self, name: str, now: float) -> None:
        log.warning("node %s missed heartbeats for %.0f s: declaring it down", name, self.node_timeout_s)
        down = NodeDown(node=name, reason="Not responding", down_at=self.clock())
        try:  # one attempt: should NATS be away, the silence is judged again once it is back
            await self.events.publish(down, f"down:{name}:{int(now)}", timeout=2.0)
        except NATS_UNAVAILABLE as error:
            log.warning("NodeDown for %s not published (%s)", name, type(error).__name__)
            return
        self.state.nodes[name].alive = False
