"""The scheduler's view of the cluster, folded from the event log (pure: no I/O, no clock).

`evolve(state, seq, event, stored_at)` applies one event at its stream sequence; `replay` is the left
fold. The state is mutated in place and returned: a copy per event would make replaying a
long log quadratic. Every case is idempotent, so the scheduler may apply its own decisions
at once ("state plus the plan so far") and again when they come back from the log.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import reduce

from services.scheduler.core.capacity import FreeCapacity
from shared.events import (
    AnyEvent,
    JobAllocated,
    JobCancelled,
    JobCancelRequested,
    JobFinished,
    JobLost,
    JobRequeued,
    JobStarted,
    JobSubmitted,
    NodeDown,
    NodeDrained,
    NodeRegistered,
    NodeResumed,
    SchedulerElected,
)


@dataclass(slots=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    partitions: tuple[str, ...]
    alive: bool = True
    drained: bool = False  # an operator's: takes no new jobs, whatever its liveness
    used_cpus: int = 0
    used_memory_mb: int = 0
    jobs: set[int] = field(default_factory=set)

    @property
    def free_cpus(self) -> int:
        return self.cpus - self.used_cpus

    @property
    def free_memory_mb(self) -> int:
        return self.memory_mb - self.used_memory_mb


@dataclass(frozen=True, slots=True)
class PendingJob:
    job_id: int
    partition: str
    cpus: int
    memory_mb: int
    exclusive: bool
    requeue: bool = False
    end_after: int = 0  # the JobRequeued its next run begins after (0: its first run)
    traceparent: str | None = None  # the job's trace (JobSubmitted.traceparent)
    submitted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    node: str
    cpus: int
    memory_mb: int
    job: PendingJob  # what it was, to queue it again should the run be requeued


@dataclass(slots=True)
class SchedulerState:
    nodes: dict[str, Node] = field(default_factory=dict)
    # partition -> job id -> job, in submission order (ids increase with the stream sequence). Each an
    # OrderedDict (see `queue`): a plain dict leaves a hole where its head was popped, and every pass
    # would step over all of them to reach its first job (msgspec stores them, and gives them back, as dicts).
    queues: dict[str, dict[int, PendingJob]] = field(default_factory=dict)
    placed: dict[int, Placement] = field(default_factory=dict)
    # job id -> why it is to be cancelled before it starts ("" when its owner asked)
    cancel_requested: dict[int, str] = field(default_factory=dict)
    # placed jobs whose owner asked for a cancel: theirs to end unless the run is requeued (its node lost)
    cancel_if_requeued: set[int] = field(default_factory=set)
    # job id -> node: placed on a node declared down, to be ended NODE_FAIL (JobLost)
    lost: dict[int, str] = field(default_factory=dict)
    leader: str = ""  # the scheduler elected last: the only one whose decisions the log takes
    election_seq: int = 0  # where that election is in the log; decisions are published only while it is last
    last_seq: int = 0
    # Derived from `nodes`, kept in step with them, never stored (see encode_snapshot).
    capacity: FreeCapacity = field(default_factory=FreeCapacity, compare=False, repr=False)

    def free_capacity(self) -> FreeCapacity:
        """The index of the nodes' free room, built first if this state has none yet."""
        if not self.capacity.built:
            self.capacity.rebuild(self.nodes.values())
        return self.capacity

    def queue(self, partition: str) -> dict[int, PendingJob]:
        queue = self.queues.get(partition)
        if type(queue) is not OrderedDict:  # new, or a plain dict read from a snapshot
            queue = self.queues[partition] = OrderedDict(queue or {})
        return queue

    def pending(self, job_id: int) -> PendingJob | None:
        for queue in self.queues.values():
            if job_id in queue:
                return queue[job_id]
        return None

    def job(self, job_id: int) -> PendingJob | None:
        """A job the scheduler still has to do with: pending, or placed (what it was when pending)."""
        placement = self.placed.get(job_id)
        return placement.job if placement else self.pending(job_id)

    def _dequeue(self, job_id: int) -> PendingJob | None:
        for queue in self.queues.values():
            if job_id in queue:
                return queue.pop(job_id)
        return None

    def _enqueue(self, job: PendingJob) -> None:
        """Queue a job in its place by submission order (a requeued job goes back where it was)."""
        queue = self.queue(job.partition)
        queue[job.job_id] = job
        if any(other > job.job_id for other in queue):
            self.queues[job.partition] = OrderedDict(sorted(queue.items()))

    def _unplace(self, job_id: int) -> Placement | None:
        """Free what a job's run held on its node."""
        self.lost.pop(job_id, None)
        placement = self.placed.pop(job_id, None)
        if placement and (node := self.nodes.get(placement.node)):
            node.used_cpus -= placement.cpus
            node.used_memory_mb -= placement.memory_mb
            node.jobs.discard(job_id)
            self.capacity.refresh(node)
        return placement


LATE_SUBMISSION = "The submission reached the log after the gateway had answered 503: withdrawn"


def evolve(state: SchedulerState, seq: int, event: AnyEvent, stored_at: datetime | None = None) -> SchedulerState:
    """Apply one event, stored in the log at `seq` (at time `stored_at`, when known). One at or
    before the position read through is applied already (delivered again): not every case could
    take it twice (a NodeDown again would find the runs placed on the node since it came back)."""
    if seq <= state.last_seq:
        return state
    match event:
        case JobSubmitted(spec=spec):
            state.queue(spec.partition)[seq] = PendingJob(
                seq, spec.partition, spec.cpus, spec.memory_mb, spec.exclusive, spec.requeue,
                traceparent=event.traceparent, submitted_at=event.submitted_at,
            )
            if event.void_if_stored_at(stored_at):
                state.cancel_requested[seq] = LATE_SUBMISSION
        case JobCancelRequested(job_id=job_id):
            if state.pending(job_id) is not None:
                state.cancel_requested.setdefault(job_id, "")
            elif job_id in state.placed:
                state.cancel_if_requeued.add(job_id)
        case JobAllocated(job_id=job_id, node=name, cpus=cpus, memory_mb=memory_mb, end_after=end_after):
            # Placed: a cancel request is now its executor's to carry out, not ours.
            state.cancel_requested.pop(job_id, None)
            state.cancel_if_requeued.discard(job_id)
            job = state.pending(job_id)
            if job is not None and job.end_after == end_after:
                state._dequeue(job_id)
                state.placed[job_id] = Placement(name, cpus, memory_mb, job)
                if node := state.nodes.get(name):
                    node.used_cpus += cpus
                    node.used_memory_mb += memory_mb
                    node.jobs.add(job_id)
                    state.capacity.refresh(node)
                    if not node.alive:  # decided just before its NodeDown, stored just after it
                        state.lost[job_id] = name
        case JobCancelled(job_id=job_id):
            state._dequeue(job_id)
            state.cancel_requested.pop(job_id, None)
        case JobFinished(job_id=job_id) | JobLost(job_id=job_id):
            state._dequeue(job_id)
            state.cancel_requested.pop(job_id, None)
            state.cancel_if_requeued.discard(job_id)
            state._unplace(job_id)
        case JobRequeued(job_id=job_id, end_after=end_after):
            placement = state.placed.get(job_id)
            if placement is not None and placement.job.end_after == end_after:
                state._unplace(job_id)
                state._enqueue(replace(placement.job, end_after=seq))
                if job_id in state.cancel_if_requeued:  # its executor never ended it: it is not to run again
                    state.cancel_if_requeued.discard(job_id)
                    state.cancel_requested.setdefault(job_id, "")
        case JobStarted():
            pass
        case NodeRegistered(node=name, cpus=cpus, memory_mb=memory_mb, partitions=partitions):
            if node := state.nodes.get(name):
                node.cpus, node.memory_mb, node.partitions, node.alive = cpus, memory_mb, tuple(partitions), True
            else:
                node = state.nodes[name] = Node(name, cpus, memory_mb, tuple(partitions))
            state.capacity.refresh(node)
        case NodeDrained(node=name) | NodeResumed(node=name) if name in state.nodes:
            state.nodes[name].drained = isinstance(event, NodeDrained)
            state.capacity.refresh(state.nodes[name])
        case NodeDown(node=name):
            if node := state.nodes.get(name):
                node.alive = False
                state.capacity.refresh(node)
            for job_id, placement in state.placed.items():
                if placement.node == name:
                    state.lost[job_id] = name
        case SchedulerElected(scheduler=scheduler) if seq > state.election_seq:
            state.leader, state.election_seq = scheduler, seq
    state.last_seq = seq
    return state


def replay(events: Iterable[tuple], state: SchedulerState | None = None) -> SchedulerState:
    """Fold (seq, event) or (seq, event, stored_at) items."""
    return reduce(lambda acc, item: evolve(acc, *item), events, state or SchedulerState())


def assume(state: SchedulerState, decision: JobAllocated | JobCancelled | JobLost | JobRequeued,
           seq: int) -> SchedulerState:
    """Apply a decision published at `seq` but not yet read back: the read position stays put."""
    read_through = state.last_seq
    evolve(state, seq, decision)
    state.last_seq = read_through
    return state
