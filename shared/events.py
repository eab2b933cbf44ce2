"""The event contract: every fact about a job or a node, as a versioned, tagged msgspec Struct.

Events are public (integrations subscribe to them): fields are only ever added, always with a
default, and a field's type never changes, so an old event always still decodes. `v` is the
schema version of the event type; bump it when fields are added.

A job's id is the JetStream sequence of its `JobSubmitted` message, so `JobSubmitted` carries
no id of its own; every later event of the job names it in the field `job_id` and the subject.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

STREAM = "SCNS"
STREAM_SUBJECTS = ["scns.>"]

# Control-plane subjects, outside the stream: nothing on them is a fact worth keeping.
HEARTBEAT_SUBJECT = "scnsctl.heartbeat.{node}"
LOGS_SUBJECT = "scnsctl.logs.{node}"
# The stores beside the log: API tokens (the gateway's) and state snapshots (the schedulers').
TOKENS_BUCKET = "SCNS_TOKENS"
SNAPSHOTS_BUCKET = "SCNS_SNAPSHOTS"


NODE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a node's name is a token of its subjects


def executor_consumer(node: str) -> str:
    """An executor's durable consumer; its version changes with its filter (a new one is made)."""
    return f"executor-v2-{node}"


# Answered by the active scheduler (and by one that has just won an election); silence means none.
ACTIVE_SCHEDULER_SUBJECT = "scnsctl.scheduler.active"


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    v: int = 1


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the user asked for, validated and normalised by the gateway."""

    account: str
    name: str
    partition: str
    cwd: str
    stdout: str
    stderr: str
    script: str
    time_limit_s: int  # 0 = no limit
    environment: dict[str, str] = {}
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    memory_mb: int = 1024
    exclusive: bool = False
    data_source: str = "API"
    requeue: bool = False  # lost with its node: queued again (same id) rather than ended NODE_FAIL

    @property
    def cpus(self) -> int:
        return self.ntasks_per_node * self.cpus_per_task


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who asked for something, by the API token used: never the secret itself."""

    token: str  # the token's name: "admin" for the bootstrap admin token, "anonymous" with authentication off
    account: str  # the token's account ("*" for the bootstrap admin and with authentication off)
    role: str  # user | admin
    # Which token of that name (a name is free again once its token is revoked): the first 12 hex
    # digits of its SHA-256, as the token store keys it. None for the bootstrap admin and anonymous
    # (names never reused), and in events written before it was recorded.
    token_id: str | None = None


class JobSubmitted(Event, frozen=True, kw_only=True):
    v: int = 3  # 2: traceparent, and spec.requeue; 3: submitted_by
    spec: JobSpec
    submitted_at: datetime
    # The gateway answers 503 if JetStream has not acked by then; a submission stored later
    # (NATS hung, then resumed) is void, and the scheduler cancels it before it can run.
    accept_until: datetime | None = None
    # The W3C trace context of the job's trace (its submit request), when the gateway traces.
    traceparent: str | None = None
    submitted_by: Actor | None = None  # None: submitted before v3

    def void_if_stored_at(self, stored_at: datetime | None) -> bool:
        """Whether this submission, stored at `stored_at`, came after its gateway had given up on it."""
        return self.accept_until is not None and stored_at is not None and stored_at > self.accept_until


class JobCancelRequested(Event, frozen=True, kw_only=True):
    v: int = 2  # 2: requested_by
    job_id: int
    requested_at: datetime
    requested_by: Actor | None = None  # None: requested before v2


class JobAllocated(Event, frozen=True, kw_only=True):
    """A run of the job placed on a node. A job runs once, unless requeued (see `JobRequeued`)."""

    v: int = 2  # 2: end_after
    job_id: int
    node: str
    cpus: int
    memory_mb: int
    allocated_at: datetime
    # 0 for a job's first run; after a requeue, the sequence of that JobRequeued. The run's end
    # must be the next event under the job's end subjects (see `end_of`).
    end_after: int = 0


class JobCancelled(Event, frozen=True, kw_only=True):
    """A pending job was cancelled (decided by the scheduler): one that never started, or one whose
    run was requeued after its owner had asked for the cancel."""

    job_id: int
    cancelled_at: datetime
    reason: str = ""  # empty: its owner asked; else why the scheduler withdrew it


class JobStarted(Event, frozen=True, kw_only=True):
    v: int = 2  # 2: end_after
    job_id: int
    node: str
    pid: int
    started_at: datetime
    end_after: int = 0  # the run that started (as in JobAllocated)


class JobFinished(Event, frozen=True, kw_only=True):
    """How a job that reached its node ended (decided by that node's executor).

    `started_at` is None when the job was cancelled on the node before it started. `peak_memory_kb`
    is the most memory the job was seen to use (its cgroup's high-water mark, page cache included;
    under the process watchdog, the largest total resident set of its processes at a poll) and
    `cpu_seconds` the user + system time of its processes (Slurm's TotalCPU); each None when not
    known (the job never started; a job shorter than one poll of the watchdog has no peak).
    """

    v: int = 2  # 2: peak_memory_kb, cpu_seconds
    job_id: int
    node: str
    state: str  # COMPLETED | FAILED | CANCELLED | TIMEOUT | OUT_OF_MEMORY | NODE_FAIL
    exit_code: str  # "<exit status>:<signal>"
    error_msg: str | None = None
    started_at: datetime | None = None
    ended_at: datetime
    peak_memory_kb: int | None = None
    cpu_seconds: float | None = None


class JobLost(Event, frozen=True, kw_only=True):
    """A job whose node was declared down while it held the job: NODE_FAIL (decided by the
    scheduler, which cannot ask the node). Should the node come back, it kills the job."""

    v: int = 2  # 2: end_after
    job_id: int
    node: str
    reason: str
    lost_at: datetime
    end_after: int = 0  # the run it ends (as in JobAllocated)


class JobRequeued(Event, frozen=True, kw_only=True):
    """A run of a job submitted with `requeue` was lost with its node: the run ends, the job is
    queued again under its own id (decided by the scheduler). Should the node come back, it
    kills that run, and its report of the run's end is refused."""

    job_id: int
    node: str
    reason: str
    requeued_at: datetime
    end_after: int = 0  # the run it ends (as in JobAllocated)


class NodeRegistered(Event, frozen=True, kw_only=True):
    node: str
    cpus: int
    memory_mb: int
    partitions: list[str]
    arch: str
    registered_at: datetime


class NodeDown(Event, frozen=True, kw_only=True):
    node: str
    reason: str
    down_at: datetime


class NodeDrained(Event, frozen=True, kw_only=True):
    """An operator asked that the node take no new jobs (those running finish)."""

    node: str
    by: str  # the token's name
    drained_at: datetime


class NodeResumed(Event, frozen=True, kw_only=True):
    """An operator put a drained node back into service."""

    node: str
    by: str
    resumed_at: datetime


class SchedulerElected(Event, frozen=True, kw_only=True):
    """A scheduler became the active one. Schedulers publish their decisions only while this is
    still the last election in the log (JetStream compares and sets), so a deposed one cannot write."""

    scheduler: str  # the instance's identity
    elected_at: datetime


JobEvent = (JobSubmitted | JobCancelRequested | JobAllocated | JobCancelled | JobStarted | JobFinished | JobLost
            | JobRequeued)
# A job's end: exactly one of these per job, enforced by JetStream (see `end_of`).
TerminalEvent = JobCancelled | JobFinished | JobLost
# The end of one run of a job: its terminal event, or a requeue.
RunEndEvent = TerminalEvent | JobRequeued
NodeEvent = NodeRegistered | NodeDown | NodeDrained | NodeResumed
AnyEvent = JobEvent | NodeEvent | SchedulerElected

# The one table of where each event type is published. Executors filter on the trailing node.
SUBJECTS: dict[type[Event], str] = {
    JobSubmitted: "scns.submit",
    JobCancelRequested: "scns.job.{job_id}.cancel_requested",
    JobAllocated: "scns.job.{job_id}.allocated.{node}",
    JobStarted: "scns.job.{job_id}.started.{node}",
    # The ends share the token "end": publishing one expects no message yet under scns.job.<id>.end.>
    JobCancelled: "scns.job.{job_id}.end.cancelled",
    JobFinished: "scns.job.{job_id}.end.finished.{node}",
    JobLost: "scns.job.{job_id}.end.lost.{node}",
    JobRequeued: "scns.job.{job_id}.end.requeued.{node}",
    NodeRegistered: "scns.node.{node}.registered",
    NodeDown: "scns.node.{node}.down",
    NodeDrained: "scns.node.{node}.drained",
    NodeResumed: "scns.node.{node}.resumed",
    SchedulerElected: "scns.scheduler.elected",
}

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"})

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def subject_of(event: Event) -> str:
    template = SUBJECTS[type(event)]
    return template.format(job_id=getattr(event, "job_id", ""), node=getattr(event, "node", ""))


def run_key(job_id: int, end_after: int) -> str:
    """Names one run of a job in message ids (a requeued job's next run is another)."""
    return f"{job_id}:{end_after}" if end_after else str(job_id)


def job_subjects(job_id: int) -> str:
    """The filter for every event of one job after its submission."""
    return f"scns.job.{job_id}.>"


def end_of(job_id: int) -> str:
    """The filter of the ends of a job's runs: its requeues, then its one terminal event.

    Each run's end is published only if the last message under it is still the one the run
    began after (`end_after`; 0: none), so each run ends once and the job ends once."""
    return f"scns.job.{job_id}.end.>"


def allocations_for(node: str) -> str:
    return SUBJECTS[JobAllocated].format(job_id="*", node=node)


def cancel_requests() -> str:
    return SUBJECTS[JobCancelRequested].format(job_id="*")


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    """Decode any event; raises msgspec.ValidationError / DecodeError on foreign data."""
    return _decoder.decode(data)
