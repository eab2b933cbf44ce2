"""The scheduler's adapter loop: fold the log, and when active and caught up, decide and publish.

Event-driven: every event read from the log may change what fits, so a pass runs as soon as
the reader is at the tip of the log (no polling interval). Node liveness comes from heartbeats
on core NATS; a node silent for longer than the timeout is declared down (an event).

Several schedulers may run; each folds the whole log (a hot standby), and the one elected last
in the log is active. Its decisions are published only while its election is still the last
one (a compare-and-set by JetStream), so a deposed scheduler cannot write. The active one
answers probes on core NATS; a standby whose probes go unanswered takes over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone

import nats
from opentelemetry.trace import SpanKind

from services.scheduler.core.policy import Decision, Policy
from services.scheduler.core.state import SchedulerState, assume, evolve
from services.scheduler.snapshots import SnapshotStore
from shared.telemetry import TRACEPARENT, context_of, headers_of, tracer
from shared.bus import (
    NATS_UNAVAILABLE,
    JetStreamEventLog,
    at_tip,
    decode_message,
    expect_last,
    is_request,
    is_wrong_last_sequence,
)
from shared.events import (
    ACTIVE_SCHEDULER_SUBJECT,
    HEARTBEAT_SUBJECT,
    SUBJECTS,
    JobAllocated,
    JobCancelled,
    JobLost,
    JobRequeued,
    NodeDown,
    SchedulerElected,
    run_key,
)

log = logging.getLogger(__name__)

MAX_EVENTS_PER_PASS = 500
ELECTIONS = SUBJECTS[SchedulerElected]
PROBE_TIMEOUT_S = 1.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Deposed(Exception):
    """Another scheduler was elected after this one: the log refused its decision."""


def msg_id_of(decision: Decision) -> str:
    return f"{type(decision).__name__}:{run_key(decision.job_id, getattr(decision, 'end_after', 0))}"


def nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def span_attributes(decision: Decision) -> dict[str, str | int]:
    return {"scns.job_id": decision.job_id, **({"scns.node": decision.node} if hasattr(decision, "node") else {})}


def new_identity() -> str:
    """Unique per process start, even where PIDs repeat (containers): two schedulers sharing one
    identity would both be active, so it is not configurable."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{secrets.token_hex(3)}"


def pid_of(identity: str) -> int:
    """The PID in a scheduler's identity (for operators and tests that must find its process)."""
    return int(identity.rsplit("-", 2)[1])


class Scheduler:
    def __init__(
        self,
        events: JetStreamEventLog,
        policy: Policy,
        node_timeout_s: float,
        *,
        lease_s: float = 3.0,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = 10_000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.events = events
        self.policy = policy
        self.node_timeout_s = node_timeout_s
        self.identity = new_identity()
        self.lease_s = lease_s
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.state = SchedulerState()
        self.caught_up = asyncio.Event()
        self.decided_through = 0  # the log position of the last completed pass
        self.snapshot_seq = 0
        self.won_election_seq = 0  # an election this scheduler won, perhaps not read back yet
        self.answering = None  # the subscription answering probes, while active
        self.last_heartbeat: dict[str, float] = {}

    @property
    def active(self) -> bool:
        """Elected last, as far as the log has been read; decisions are still fenced at publish."""
        return self.caught_up.is_set() and self.state.leader == self.identity

    async def follow_log(self) -> None:
        if self.snapshots and (snapshot := await self.snapshots.load()):
            self.state, self.snapshot_seq = snapshot, snapshot.last_seq
            log.info("starting from the snapshot at seq %d", snapshot.last_seq)
        target = await self.events.last_seq()
        if target <= self.state.last_seq:
            self.caught_up.set()
        read_since_pass = 0
        async for messages in self.events.arrivals(self.state.last_seq + 1):
            for msg in messages:
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
                # At the tip of the log, once for all that came during the last pass; or every so
                # often under a continuous stream of events.
                if self.caught_up.is_set() and (at_tip(msg, messages) or read_since_pass >= MAX_EVENTS_PER_PASS):
                    if self.active:
                        await self.schedule()
                        await self.snapshot_if_due()
                    read_since_pass = 0
                    self.decided_through = seq

    async def schedule(self) -> None:
        """One pass: publish each decision, then take it into the state at once."""
        for decision in self.policy(self.state, self.clock()):
            job = self.state.job(decision.job_id)
            job_trace = context_of({TRACEPARENT: job.traceparent} if job and job.traceparent else None)
            with tracer().start_as_current_span(f"schedule {type(decision).__name__}", context=job_trace,
                                                kind=SpanKind.PRODUCER, attributes=span_attributes(decision)):
                try:
                    seq = await self.publish(decision, headers_of())
                except Deposed:
                    await self.fenced_out()
                    return
            if seq is None:
                continue
            if isinstance(decision, (JobAllocated, JobCancelled)) and job and job.submitted_at:
                queued = tracer().start_span("queued", context=job_trace, start_time=nanoseconds(job.submitted_at),
                                             attributes={"scns.job_id": decision.job_id})
                queued.end()
            assume(self.state, decision, seq)

    async def publish(self, decision: Decision, headers: dict[str, str] | None = None) -> int | None:
        """Publish a decision: its sequence, or None when the run it ends had ended already."""
        msg_id = msg_id_of(decision)
        if isinstance(decision, (JobLost, JobRequeued)):
            # Any scheduler reading the log decides these alike; only the run's single end is guarded.
            seq = await self.events.publish_end(decision, msg_id, decision.end_after, headers)
            if seq is None:
                log.info("job %d: its run had ended already; %s not recorded", decision.job_id,
                         type(decision).__name__, extra={"job_id": decision.job_id})
            return seq
        seq = await self.events.publish_if_last(decision, msg_id, ELECTIONS, self.state.election_seq, headers)
        if seq is None:
            raise Deposed
        return seq

    async def snapshot_if_due(self) -> None:
        if self.snapshots and self.state.last_seq - self.snapshot_seq >= self.snapshot_every:
            if await self.snapshots.save(self.state):
                self.snapshot_seq = self.state.last_seq

    async def contend(self) -> None:
        """Answer probes while active; take over when the active scheduler stops answering.

        No responder at all (the active one exited, so NATS dropped its subscription) means
        taking over at once; a responder that times out (hung) is given `lease_s` first. Nothing
        is judged while this scheduler's own link is down, nor "at once" just after it came back
        (the active one may not have subscribed again yet).
        """
        nc = self.events.nc
        unanswered_since: float | None = None
        await self.caught_up.wait()
        reconnected_at, reconnects = None, nc.stats["reconnects"]
        try:
            while True:
                if self.active or self.won_election_seq > self.state.election_seq:
                    await self.answer_probes(True)
                else:
                    await self.answer_probes(False)
                    answer = await self.probe()
                    now = time.monotonic()
                    if not nc.is_connected or nc.stats["reconnects"] != reconnects:
                        answer = "unknown"
                        reconnected_at, reconnects = now, nc.stats["reconnects"]
                    if answer == "nobody" and reconnected_at is not None and now - reconnected_at < self.lease_s:
                        answer = "silent"
                    if answer in ("answered", "unknown"):
                        unanswered_since = None
                    elif answer == "nobody":
                        await self.take_over()
                    else:
                        unanswered_since = unanswered_since or now
                        if now - unanswered_since > self.lease_s:
                            await self.take_over()
                await asyncio.sleep(self.lease_s / 4)
        finally:
            if not nc.is_closed:
                await self.answer_probes(False)

    async def probe(self) -> str:
        """Ask for the active scheduler: "answered", "nobody" (no subscriber), "silent" (no answer
        in time) or "unknown" (our own link is down)."""
        try:
            await self.events.nc.request(ACTIVE_SCHEDULER_SUBJECT, b"", timeout=PROBE_TIMEOUT_S)
            return "answered"
        except nats.errors.NoRespondersError:
            return "nobody"
        except NATS_UNAVAILABLE as error:
            self.events.give_up_if_stopping()
            return "silent" if isinstance(error, asyncio.TimeoutError) else "unknown"

    async def answer_probes(self, answer: bool) -> None:
        async def on_probe(msg) -> None:
            if is_request(msg):
                await msg.respond(self.identity.encode())

        if answer and self.answering is None:
            self.answering = await self.events.nc.subscribe(ACTIVE_SCHEDULER_SUBJECT, cb=on_probe)
        elif not answer and self.answering is not None:
            await self.answering.unsubscribe()
            self.answering = None

    async def fenced_out(self) -> None:
        """The log refused a decision of ours: another scheduler was elected — or, with no election
        left in the log at all, ours expired (retention), and this scheduler elects itself again."""
        log.warning("decision refused: another scheduler was elected after seq %d", self.state.election_seq)
        try:
            expired = await self.events.last_on(ELECTIONS) is None
        except NATS_UNAVAILABLE:
            return  # judged again at the next refusal
        if expired:
            await self.take_over()

    async def take_over(self) -> None:
        """Elect this scheduler, unless someone else was elected after the last election we read.
        (Should every election have expired from the log, there is nothing to follow but the start.)"""
        await self.answer_probes(True)  # before the election lands, so that no other standby contends too
        try:
            expected = self.state.election_seq if await self.events.last_on(ELECTIONS) else 0
        except NATS_UNAVAILABLE:
            await self.answer_probes(False)
            return  # the next probe judges again
        election = SchedulerElected(scheduler=self.identity, elected_at=self.clock())
        attempt = f"elected:{self.identity}:{secrets.token_hex(4)}"  # retried as one, never taken for an old one
        seq = await self.events.publish_if_last(election, attempt, ELECTIONS, expected)
        if seq is None:
            log.info("another scheduler was elected first")
            await self.answer_probes(False)
            return
        log.info("elected at seq %d: active once the log is read up to there", seq)
        self.won_election_seq = seq

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
                    if self.active and node.alive and now - silent_since > self.node_timeout_s:
                        await self.declare_down(node.name, now)
        finally:
            await sub.unsubscribe()

    async def declare_down(self, name: str, now: float) -> None:
        log.warning("node %s missed heartbeats for %.0f s: declaring it down", name, self.node_timeout_s)
        down = NodeDown(node=name, reason="Not responding", down_at=self.clock())
        try:  # one attempt: should NATS be away, the silence is judged again once it is back
            await self.events.publish(down, f"down:{name}:{int(now)}", timeout=2.0,
                                      headers=expect_last(ELECTIONS, self.state.election_seq))
        except NATS_UNAVAILABLE as error:
            log.warning("NodeDown for %s not published (%s)", name, type(error).__name__)
            return
        except nats.js.errors.BadRequestError as error:
            if not is_wrong_last_sequence(error):
                raise
            await self.fenced_out()
            return
        self.state.nodes[name].alive = False
