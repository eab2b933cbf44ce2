"""The executor of one node: registers it, runs the jobs allocated to it, reports how they ended.

It alone decides how a run of a job on its node ended. A run is started at most once: a
journal entry is written before the process is spawned, so a redelivered allocation (or a
restart) finds it. After a restart, the jobs in the journal are reattached to (same PID and
start time, not a reused PID), or their true end is reported; a run that was declared lost or
requeued meanwhile is killed, and its end is not reported (the log holds one end per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import nats
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from services.executor.adapters.files import Owner, in_memory_file, make_workdir, open_log, open_output
from services.executor.adapters.limits import (
    RUN_MARKER_VARIABLE,
    Confinement,
    JobLimits,
    ProcessWatchdog,
    RunIdentity,
    run_id,
)
from services.executor.adapters.process import (
    JobProcess,
    as_user,
    read_cpu_seconds,
    read_status,
    with_environment,
    with_process_limit,
)
from services.executor.adapters.users import JobUsers
from services.executor.core.lifecycle import (
    LOST,
    SUPERVISOR_ENVIRONMENT,
    EndedBy,
    Outcome,
    command_for,
    ended_by_memory,
    environment_script,
    job_environment,
    job_returncode,
    outcome,
    requeued,
)
from services.executor.core.logs import TAIL_THRESHOLD_BYTES, render_log
from shared.bus import JetStreamEventLog, decode_message, is_request
from shared.events import (
    HEARTBEAT_SUBJECT,
    LOGS_SUBJECT,
    STREAM,
    SUBJECTS,
    JobAllocated,
    JobCancelRequested,
    JobFinished,
    JobLost,
    JobRequeued,
    JobSpec,
    JobStarted,
    JobSubmitted,
    NodeDown,
    NodeRegistered,
    allocations_for,
    cancel_requests,
    end_of,
    executor_consumer,
    run_key,
)
from shared.paths import resolve_output_path
from shared.rpc import LogReply, LogRequest
from shared.telemetry import TRACEPARENT, context_of, headers_of, tracer

log = logging.getLogger(__name__)

# An allocation is acked once its job has started (a few ms). One caught by a stopping
# executor is delivered again after this; the journal makes that harmless.
ALLOCATION_ACK_WAIT_S = 10
REDELIVERY_DELAY_S = 1.0
HANDLED_AT_ONCE = 32  # jobs whose messages of one batch are handled at once
SHUTDOWN_REPORT_S = 10.0  # beyond the kill grace period, for the reports to be acked
# OpenTelemetry histograms (no-op unless OTEL_* configures metrics): the /metrics page has the
# same figures from the read model, but OpenTelemetry has no observable histogram.
JOB_WAIT = metrics.get_meter("scns-conductor").create_histogram(
    "scns.job.wait", unit="s", description="From submission to start, of the jobs started on this node")
JOB_RUN = metrics.get_meter("scns-conductor").create_histogram(
    "scns.job.run", unit="s", description="From start to end, of the jobs that ran on this node")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _kib(size: int | None) -> int | None:
    return None if size is None else size // 1024


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    cpus: int
    memory_mb: int
    partitions: list[str]
    arch: str
    job_roots: list[str]
    state_dir: Path
    kill_grace_s: float
    heartbeat_s: float
    keep_jobs_on_stop: bool = True
    job_users: JobUsers = field(default_factory=JobUsers)  # default: the executor's own user
    job_umask: int = 0o077


class Run(msgspec.Struct, frozen=True):
    """One run of a job here: which one (JobAllocated.end_after), and whether the job is to be
    queued again should the run be lost (its spec's `requeue`)."""

    end_after: int = 0
    requeue: bool = False
    traceparent: str | None = None  # of the decision that placed it here: the run's span is its child
    marker: str = ""  # a secret in its processes' environment, by which the watchdog finds them (journaled)


class JournalEntry(msgspec.Struct):
    job_id: int
    pid: int = 0  # 0: written before the spawn
    create_time: float = 0.0
    started_at: datetime | None = None
    end_after: int = 0  # which run of the job (JobAllocated.end_after)
    requeue: bool = False
    traceparent: str | None = None
    marker: str = ""

    @property
    def run(self) -> Run:
        return Run(self.end_after, self.requeue, self.traceparent, self.marker)

    @classmethod
    def of(cls, job_id: int, run: Run, pid: int = 0, create_time: float = 0.0,
           started_at: datetime | None = None) -> JournalEntry:
        return cls(job_id, pid, create_time, started_at, run.end_after, run.requeue, run.traceparent, run.marker)


class PreviousRunStillEnding(RuntimeError):
    """A requeued job's next run was allocated here while its previous run here is still being ended."""


@dataclass(slots=True)
class RunningJob:
    run: Run
    span: trace.Span  # the run's, from start to end
    spec: JobSpec  # its submission's: where its output goes, without a read of the log
    cancel: asyncio.Event = field(default_factory=asyncio.Event)  # set by a cancel request or shutdown
    shutdown: bool = False
    task: asyncio.Task | None = None
    submitted_at: datetime | None = None  # known when started here (for the wait-time histogram)

    def watch(self, supervision: Coroutine[Any, Any, None]) -> None:
        """Run the job's supervision as a task, in the run's span (its log lines carry the trace)."""

        async def in_span() -> None:
            with trace.use_span(self.span, end_on_exit=False):
                await supervision

        self.task = asyncio.create_task(in_span())


class Executor:
    def __init__(self, events: JetStreamEventLog, node: NodeConfig, clock: Callable[[], datetime] = utcnow,
                 limits: JobLimits | None = None) -> None:
        self.events = events
        self.node = node
        self.clock = clock
        self.limits = limits or ProcessWatchdog()
        self.running: dict[int, RunningJob] = {}
        # Journal, scripts and status files: the executor's alone (jobs run as other users).
        node.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        node.state_dir.chmod(0o700)
        self.journal_dir = node.state_dir / "jobs"
        self.journal_dir.mkdir(exist_ok=True)
        # Tells this executor's runs from those of another on the same machine (their cgroups, processes).
        self.executor_id = hashlib.sha256(f"{node.name}:{node.state_dir.resolve()}".encode()).hexdigest()[:12]

    # ---- node -------------------------------------------------------------------------------

    async def register(self) -> None:
        registered = NodeRegistered(
            node=self.node.name, cpus=self.node.cpus, memory_mb=self.node.memory_mb,
            partitions=self.node.partitions, arch=self.node.arch, registered_at=self.clock(),
        )
        await self.events.publish_until_acked(registered, f"registered:{self.node.name}:{registered.registered_at}")
        log.info("node %s registered: %d CPUs, %d MB, partitions %s", self.node.name, self.node.cpus,
                 self.node.memory_mb, ",".join(self.node.partitions))

    async def heartbeat(self) -> None:
        subject = HEARTBEAT_SUBJECT.format(node=self.node.name)
        while True:
            try:
                await self.events.nc.publish(subject, b"")
            except nats.errors.Error as error:
                log.warning("heartbeat not sent: %s", error)
            await asyncio.sleep(self.node.heartbeat_s)

    # ---- recovery ---------------------------------------------------------------------------

    def _journal_path(self, job_id: int) -> Path:
        return self.journal_dir / f"{job_id}.json"

    def _write_journal(self, entry: JournalEntry, durable: bool = True) -> None:
        """Append an entry to the run's journal file: its last whole entry counts. Appended, not
        renamed into place, so a write cut short by a crash leaves the entry before it intact (a
        JSON object cut short never decodes), and no file is made per write. `durable` (fsync)
        for the entry written before the spawn: that one makes the start at-most-once, even
        across a power loss."""
        with open(self._journal_path(entry.job_id), "ab") as file:
            # (after a newline: one cut short before it, without its own, is not glued to it)
            file.write(b"\n" + msgspec.json.encode(entry) + b"\n")
            file.flush()
            if durable:
                os.fsync(file.fileno())

    def _read_journal(self, job_id: int) -> JournalEntry | None:
        """The last whole entry of the run's journal file; None when it has none, only one cut short
        by a crash before it was synced, so before anything was spawned. (An older executor's file
        holds one entry without a newline.) Raises FileNotFoundError when there is no such file."""
        entry = None
        for line in self._journal_path(job_id).read_bytes().split(b"\n"):
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                entry = msgspec.json.decode(line, type=JournalEntry)
        return entry

    async def recover(self) -> None:
        """Take over the jobs an earlier executor of this node left (its journal)."""
        for path in sorted(self.journal_dir.glob("*.json")):
            try:
                entry = self._read_journal(int(path.stem))
            except (OSError, ValueError) as error:
                log.error("unreadable journal entry %s (%s): left in place", path, error)
                continue
            if entry is None:  # its executor died while writing it, before the spawn: the allocation comes again
                log.warning("journal entry %s was cut short before its run was started: removed", path)
                path.unlink(missing_ok=True)
                continue
            await self._recover(entry)
        await self.limits.clean(self.executor_id, {self._run_id(job_id, running.run)
                                                   for job_id, running in self.running.items()})
        # An older executor wrote each run's script and environment there (now held in memory):
        # its runs read them through descriptors they hold, so what is left is of no use.
        shutil.rmtree(self.node.state_dir / "scripts", ignore_errors=True)

    async def _recover(self, entry: JournalEntry) -> None:
        """Reattach to a run that still runs, report the true end of one that ended meanwhile, start
        one that never started, and report NODE_FAIL (or a requeue) for one whose end is lost."""
        job_id, status_path = entry.job_id, self._status_path(entry.job_id)
        submitted = await self.events.read(job_id)
        spec = submitted.event.spec if submitted and isinstance(submitted.event, JobSubmitted) else None
        uid = self.node.job_users.for_account(spec.account).uid if spec else None
        confinement = self.limits.reattach(self._identity(job_id, entry.run, uid), spec.memory_mb if spec else 0)
        # Its supervising shell if it still runs (the same process, not a reused PID; found by its
        # command line if the PID was never journaled). Every path giving the run up kills it.
        process = (JobProcess.attach(entry.pid, entry.create_time, status_path, confinement) if entry.pid
                   else JobProcess.find(status_path, confinement))
        if process is not None and not entry.pid:
            entry = JournalEntry.of(job_id, entry.run, process.pid, process.create_time,
                                    datetime.fromtimestamp(process.create_time, timezone.utc))
            self._write_journal(entry, durable=False)  # (see _run)
        if await self._run_ended(job_id, entry.end_after):
            await self._kill(process, confinement)  # declared lost or requeued meanwhile, or its end reported
            self._forget(job_id)
            return
        if process is not None and spec is not None:
            log.info("job %d still runs (pid %d): reattached", job_id, entry.pid, extra={"job_id": job_id})
            running = self._running(job_id, entry.run, spec)
            # Its start may not have been recorded before the last executor stopped (a repeat is harmless).
            await self._report_started(job_id, running, entry.pid, entry.started_at or self.clock())
            running.watch(self._supervised(job_id, spec, running, process, entry.started_at))
            return
        await self._kill(process, confinement)  # its submission is not to be read: it cannot be supervised
        status = read_status(status_path)
        started = status_path.exists() or self._legacy_started_path(job_id).exists()
        if status is None and process is None and spec is not None and not started:
            # Its executor stopped between journaling it and spawning it: it never ran. It runs now.
            log.info("job %d was allocated here but never started: starting it", job_id, extra={"job_id": job_id})
            self._launch(job_id, submitted.event, entry.run)
        elif status is None:
            await self._finish(job_id, entry.run, LOST, started_at=entry.started_at)
        else:  # it ended by itself while no executor watched: its true end (its cgroup tells an OOM)
            limit, memory_mb = (spec.time_limit_s, spec.memory_mb) if spec else (0, 0)
            ended_by = ended_by_memory(EndedBy.ITSELF, confinement.memory_exceeded())
            await self._finish(job_id, entry.run, outcome(job_returncode(status), ended_by, 0, limit, memory_mb),
                               started_at=entry.started_at)

    @staticmethod
    async def _kill(process: JobProcess | None, confinement: Confinement) -> None:
        """End every process of a run, its supervising shell found or not."""
        if process is not None:
            await process.kill()
        else:
            await confinement.release()

    def _run_id(self, job_id: int, run: Run) -> str:
        return run_id(job_id, run.end_after, self.executor_id)

    def _identity(self, job_id: int, run: Run, uid: int | None) -> RunIdentity:
        return RunIdentity(self._run_id(job_id, run), run.marker, uid)

    def _status_path(self, job_id: int) -> Path:
        """Made (empty) by the job's supervising shell before it starts the job, its status written at the end."""
        return self.node.state_dir / "status" / str(job_id)

    def _legacy_started_path(self, job_id: int) -> Path:
        """What an older supervising shell made before it started the job (a run of it may still run)."""
        return self.node.state_dir / "status" / f"{job_id}.started"

    # ---- allocations and cancels ---------------------------------------------------------------

    async def consume(self) -> None:
        durable = executor_consumer(self.node.name)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subjects=[
                allocations_for(self.node.name),
                cancel_requests(),
                SUBJECTS[NodeDown].format(node=self.node.name),
                SUBJECTS[JobLost].format(job_id="*", node=self.node.name),
                SUBJECTS[JobRequeued].format(job_id="*", node=self.node.name),
            ],
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ALLOCATION_ACK_WAIT_S,
            max_ack_pending=10000,
        )
        while True:
            # Create or update: a durable whose filter changed must not keep its old one.
            await self.events.js.add_consumer(STREAM, config=config)
            try:
                # Closed on the way out: interest is withdrawn at once, so nothing more is
                # delivered to an executor that stops.
                async with contextlib.aclosing(self.events.pulled(durable)) as arriving:
                    async for messages in arriving:
                        await self._process_batch(messages)
            except NotFoundError:  # deleted (by an operator, say): made again, it delivers every allocation
                log.warning("this node's consumer of the log is gone: making it again")

    async def _process_batch(self, messages: list) -> None:
        """Handle a batch: the messages of one job in order, those of different jobs at once (an
        allocation waits for three reads of the log, so a burst of them handled one by one waits
        for all those round trips); a message of no job (NodeDown) alone, after those before it."""
        lanes: dict[str, list] = {}
        for msg in messages:
            if msg.subject.startswith("scns.job."):
                lanes.setdefault(msg.subject.split(".")[2], []).append(msg)
            else:
                await self._process_lanes(lanes)
                lanes = {}
                await self._process(msg)
        await self._process_lanes(lanes)

    async def _process_lanes(self, lanes: dict[str, list]) -> None:
        at_once = asyncio.Semaphore(HANDLED_AT_ONCE)

        async def in_order(messages: list) -> None:
            async with at_once:
                for msg in messages:
                    await self._process(msg)

        await asyncio.gather(*(in_order(messages) for messages in lanes.values()))

    async def _process(self, msg) -> None:
        """Handle one message; on failure, ask for it again (nack) instead of losing it or stopping."""
        try:
            if delivered := decode_message(msg):
                await self.handle(delivered.event, msg.headers)
            await msg.ack()
        except Exception:
            log.exception("failed to handle %s; it will be delivered again", msg.subject)
            await msg.nak(delay=REDELIVERY_DELAY_S)

    async def handle(self, event, headers: dict[str, str] | None = None) -> None:
        match event:
            case JobAllocated(node=node) if node == self.node.name:
                await self.start(event, (headers or {}).get(TRACEPARENT))
            case JobCancelRequested(job_id=job_id):
                if running := self.running.get(job_id):
                    running.cancel.set()
            case NodeDown(node=node) if node == self.node.name:
                # Its jobs are being declared lost: end them first (their reports and the
                # scheduler's compete for the one end each may have), then take new work.
                log.warning("this node was declared down: ending its jobs, then registering again")
                await self.end_running_jobs()
                await self.register()
            case JobLost(job_id=job_id, end_after=end_after) | JobRequeued(job_id=job_id, end_after=end_after):
                # Declared lost (or requeued) while this node was unreachable: end that run; its own
                # report of the end will be refused (the run has its end already), so nothing is said twice.
                if (running := self.running.get(job_id)) and running.run.end_after == end_after:
                    log.warning("job %d was declared lost while this node was away: killing it", job_id,
                                extra={"job_id": job_id})
                    running.cancel.set()

    async def start(self, allocation: JobAllocated, traceparent: str | None = None) -> None:
        job_id, end_after = allocation.job_id, allocation.end_after
        here = self._run_here(job_id)
        if here == end_after:
            return  # a redelivered allocation: this run was already started here
        # Three reads of the log, at once: each is a round trip.
        ended, submitted, cancel = await asyncio.gather(
            self._run_ended(job_id, end_after), self.events.read(job_id),
            self.events.last_on(SUBJECTS[JobCancelRequested].format(job_id=job_id)))
        if ended:
            return  # already reported (the journal entry goes once the report is acked), or requeued
        if here is not None:
            raise PreviousRunStillEnding(f"job {job_id}: its previous run here is still being ended")
        if submitted is None or not isinstance(submitted.event, JobSubmitted):
            raise LookupError(f"allocation of job {job_id} names no submission in the log")
        run = Run(end_after, submitted.event.spec.requeue, traceparent, secrets.token_hex(16))
        if cancel is not None:
            # Cancelled while it was being allocated: it ends here without running.
            await self._finish(job_id, run, Outcome("CANCELLED", "0:0", None), started_at=None)
            return
        self._launch(job_id, submitted.event, run)

    def _launch(self, job_id: int, submitted: JobSubmitted, run: Run) -> None:
        """Journal the run (before anything is spawned: it never starts twice), then start it."""
        self._write_journal(JournalEntry.of(job_id, run))
        running = self._running(job_id, run, submitted.spec)
        running.submitted_at = submitted.submitted_at
        running.watch(self._run(job_id, submitted.spec, running))

    def _running(self, job_id: int, run: Run, spec: JobSpec) -> RunningJob:
        """A run this executor supervises, with its span."""
        span = tracer().start_span("run job", context=context_of({TRACEPARENT: run.traceparent} if run.traceparent else None),
                                   kind=SpanKind.CONSUMER, attributes={"scns.job_id": job_id, "scns.node": self.node.name})
        self.running[job_id] = running = RunningJob(run, span, spec)
        return running

    def _run_here(self, job_id: int) -> int | None:
        """Which run of the job this node has (running, or journaled by an earlier executor), if any."""
        if (running := self.running.get(job_id)) is not None:
            return running.run.end_after
        try:
            entry = self._read_journal(job_id)
        except FileNotFoundError:
            return None
        return entry.end_after if entry is not None else None

    async def _run_ended(self, job_id: int, end_after: int) -> bool:
        """Whether that run of the job has its end in the log: anything after the event it began after."""
        last_end = await self.events.last_on(end_of(job_id))
        return last_end is not None and last_end.seq != end_after

    async def _run(self, job_id: int, spec: JobSpec, running: RunningJob) -> None:
        """Start the job, then supervise it to its end."""
        try:
            process = await self._spawn(job_id, spec, running.run)
        except (OSError, ValueError) as error:  # a path or an environment the OS will not take
            await self._end(job_id, running, Outcome("FAILED", "127:0", f"Could not start the job: {error}"), None)
            return
        started_at = self.clock()
        if running.submitted_at is not None:
            JOB_WAIT.record((started_at - running.submitted_at).total_seconds())
        try:
            # Not synced: the PID only spares a restarted executor a search of the process table
            # (JobProcess.find). An executor that crashes leaves it in the page cache; a power loss
            # ends the job too, so the PID would name no process, and the entry before it (synced,
            # kept whole: appended to) still says the run was journaled.
            self._write_journal(JournalEntry.of(job_id, running.run, process.pid, process.create_time, started_at),
                                durable=False)
            await self._report_started(job_id, running, process.pid, started_at)
        except Exception as error:  # a full disk, say: the job must not outlive its report
            log.exception("job %d: could not record its start", job_id, extra={"job_id": job_id})
            await process.kill()
            await self._end(job_id, running,
                            Outcome("FAILED", "0:9", f"Executor failure on node {self.node.name}: {error}"), started_at)
            return
        await self._supervised(job_id, spec, running, process, started_at)

    async def _report_started(self, job_id: int, running: RunningJob, pid: int, started_at: datetime) -> None:
        log.info("job %d started (pid %d)", job_id, pid, extra={"job_id": job_id})
        started = JobStarted(job_id=job_id, node=self.node.name, pid=pid, started_at=started_at,
                             end_after=running.run.end_after)
        await self.events.publish_until_acked(started, f"started:{run_key(job_id, running.run.end_after)}",
                                              headers_of(trace.set_span_in_context(running.span)))

    async def _end(self, job_id: int, running: RunningJob, result: Outcome, started_at: datetime | None) -> None:
        """Report the end of a job that is not (or no longer) supervised, and let it go."""
        try:
            await self._finish(job_id, running.run, result, started_at, running.span)
        finally:
            self.running.pop(job_id, None)

    async def _supervised(self, job_id: int, spec: JobSpec, running: RunningJob, process: JobProcess,
                          started_at: datetime | None) -> None:
        """Watch a started job to its end and report that end: exactly once, whatever fails on the way."""
        peak_memory_kb = None
        try:
            try:
                elapsed = (self.clock() - started_at).total_seconds() if started_at else 0.0
                remaining = max(0.001, spec.time_limit_s - elapsed) if spec.time_limit_s else 0
                ended_by = await self._wait(process, running, remaining)
                ended_by = ended_by_memory(ended_by, process.confinement.memory_exceeded())
                peak_memory_kb = _kib(process.confinement.peak_memory_bytes())  # (gone with the cgroup)
                await process.confinement.release()  # what it left running ends with it
                if process.returncode is None and ended_by is EndedBy.ITSELF:
                    result = LOST  # it died with its supervising shell while no executor watched
                else:  # (when we ended it, our signal says how, whatever the shell could record)
                    returncode = job_returncode(process.returncode) if process.returncode is not None else 0
                    result = outcome(returncode, ended_by, process.last_signal_sent, spec.time_limit_s, spec.memory_mb)
            except Exception as error:  # a bug: the job must not outlive its report
                log.exception("job %d: executor failure", job_id, extra={"job_id": job_id})
                await process.kill()
                result = Outcome("FAILED", "0:9", f"Executor failure on node {self.node.name}: {error}")
            await self._finish(job_id, running.run, result, started_at, running.span, peak_memory_kb)
        finally:
            self.running.pop(job_id, None)

    async def _spawn(self, job_id: int, spec: JobSpec, run: Run) -> JobProcess:
        """Start the job as its account's user: its folders and output files made and opened here,
        without following a symlink, inside the job roots; its processes in a confinement."""
        user = self.node.job_users.for_account(spec.account)
        umask, roots = self.node.job_umask, self.node.job_roots
        outputs = [resolve_output_path(spec.cwd, path, job_id) for path in (spec.stdout, spec.stderr)]
        with contextlib.ExitStack() as descriptors:
            def opened(descriptor: int) -> int:
                descriptors.callback(os.close, descriptor)
                return descriptor

            workdir = opened(make_workdir(spec.cwd, roots, user.owner, umask))
            stdout = opened(open_output(outputs[0], roots, user.owner, umask))
            stderr = stdout if outputs[1] == outputs[0] else opened(open_output(outputs[1], roots, user.owner, umask))
            env = {**job_environment(spec, job_id, self.node.name, user.name, user.home),
                   RUN_MARKER_VARIABLE: run.marker}
            script = opened(in_memory_file(f"job-{job_id}.sh", spec.script))
            environment = opened(in_memory_file(f"job-{job_id}.env", environment_script(env)))
            command = with_environment(workdir, environment, command_for(spec.script, f"/proc/self/fd/{script}"))
            if user.uid != os.geteuid():
                command = as_user(user.uid, user.gid, command)
            if self.limits.limits_user_processes:  # whoever runs it: the same bound
                command = with_process_limit(self.limits.pids_max, command)
            status = self._status_path(job_id)
            status.parent.mkdir(mode=0o700, exist_ok=True)
            status.unlink(missing_ok=True)
            confinement = self.limits.confine(self._identity(job_id, run, user.uid), spec.memory_mb)
            try:
                return await JobProcess.spawn(command, SUPERVISOR_ENVIRONMENT, stdout, stderr, status, umask,
                                              confinement, pass_fds=(workdir, script, environment))
            except BaseException:
                await confinement.release()
                raise

    async def _wait(self, process: JobProcess, running: RunningJob, time_limit_s: int) -> EndedBy:
        exited = asyncio.ensure_future(process.wait())
        interrupted = asyncio.ensure_future(running.cancel.wait())
        over_memory = asyncio.ensure_future(process.confinement.over_memory())
        done, _ = await asyncio.wait(
            [exited, interrupted, over_memory], timeout=time_limit_s or None, return_when=asyncio.FIRST_COMPLETED
        )
        interrupted.cancel()
        over_memory.cancel()
        if exited in done:
            return EndedBy.ITSELF
        if over_memory in done:
            await process.kill()
            return EndedBy.MEMORY
        await process.terminate(self.node.kill_grace_s)
        if interrupted not in done:
            return EndedBy.TIMEOUT
        return EndedBy.SHUTDOWN if running.shutdown else EndedBy.CANCEL

    async def _finish(self, job_id: int, run: Run, result: Outcome, started_at: datetime | None,
                      span: trace.Span = trace.INVALID_SPAN, peak_memory_kb: int | None = None) -> None:
        """Report how the run ended: the job's end, or a requeue (lost, and submitted with requeue).
        The report is a child of the run's span, or (no span: never supervised here) of its placing.
        The CPU time is the supervising shell's record (so known after a restart too)."""
        end: JobFinished | JobRequeued
        cpu_seconds = read_cpu_seconds(self._status_path(job_id))
        if requeued(result, run.requeue):
            end = JobRequeued(job_id=job_id, node=self.node.name, reason=result.error_msg or "",
                              requeued_at=self.clock(), end_after=run.end_after)
        else:
            end = JobFinished(
                job_id=job_id, node=self.node.name, state=result.state, exit_code=result.exit_code,
                error_msg=result.error_msg, started_at=started_at, ended_at=self.clock(), peak_memory_kb=peak_memory_kb,
                cpu_seconds=cpu_seconds,
            )
            if started_at is not None:
                JOB_RUN.record((end.ended_at - started_at).total_seconds(), {"state": result.state})
        # The scheduler names a requeue alike: should both decide it, the log keeps one.
        msg_id = f"{type(end).__name__}:{run_key(job_id, run.end_after)}"
        log.info("job %d: %s %s", job_id, type(end).__name__ if isinstance(end, JobRequeued) else result.state,
                 result.exit_code, extra={"job_id": job_id})
        span.set_attributes({"scns.state": result.state, "scns.exit_code": result.exit_code})
        if cpu_seconds is not None:
            span.set_attribute("scns.cpu_seconds", cpu_seconds)
        context = (trace.set_span_in_context(span) if span.get_span_context().is_valid
                   else context_of({TRACEPARENT: run.traceparent} if run.traceparent else None))
        stored = await self.events.publish_end(end, msg_id, run.end_after, headers_of(context))
        span.end()
        if stored is None:
            log.warning("job %d: this run had its end already (declared lost?): this %s is not recorded", job_id,
                        result.state, extra={"job_id": job_id})
        self._forget(job_id)

    def _forget(self, job_id: int) -> None:
        self._journal_path(job_id).unlink(missing_ok=True)
        self._status_path(job_id).unlink(missing_ok=True)
        self._legacy_started_path(job_id).unlink(missing_ok=True)

    async def stop_jobs(self) -> None:
        """On shutdown: leave the jobs running for the next executor to reattach to (the default),
        or end them and wait for their reports (KEEP_JOBS_ON_STOP=false, as `up` runs it)."""
        if self.node.keep_jobs_on_stop:
            tasks = [running.task for running in self.running.values() if running.task]
            for task in tasks:
                task.cancel()  # only the watching stops; the journal keeps what the next one needs
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        await self.end_running_jobs()

    async def end_running_jobs(self) -> None:
        """End every running job NODE_FAIL (SIGTERM, then SIGKILL after the grace) and wait for the reports."""
        tasks = [running.task for running in self.running.values() if running.task]
        for running in self.running.values():
            running.shutdown = True
            running.cancel.set()
        if tasks:
            await asyncio.wait(tasks, timeout=self.node.kill_grace_s + SHUTDOWN_REPORT_S)

    # ---- logs -------------------------------------------------------------------------------

    async def serve_logs(self) -> None:
        async def on_request(msg) -> None:
            if not is_request(msg):
                return  # a delivery aimed at this subject, not a request: no file is read for it
            try:
                reply = await self._logs(msgspec.json.decode(msg.data, type=LogRequest))
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                reply = LogReply(error=f"bad log request: {error}")
            except nats.errors.Error as error:
                reply = LogReply(error=f"the job's submission could not be read: {error}")
            await msg.respond(msgspec.json.encode(reply))

        sub = await self.events.nc.subscribe(LOGS_SUBJECT.format(node=self.node.name), cb=on_request)
        try:
            await asyncio.Future()
        finally:
            await sub.unsubscribe()

    async def _logs(self, request: LogRequest) -> LogReply:
        """A job's output files, as its submission names them (not as the request does), and only
        files of the user the job ran as: never another account's file, whatever was put in the way.
        A job running here has its submission at hand; an ended one's is read from the log."""
        if request.job_id is None:
            return LogReply(error="a log request must name its job (job_id)")
        if (running := self.running.get(request.job_id)) is not None:
            spec = running.spec
        elif (submitted := await self.events.read(request.job_id)) is not None and isinstance(submitted.event, JobSubmitted):
            spec = submitted.event.spec
        else:
            return LogReply(error=f"no job {request.job_id}")
        owner = self.node.job_users.for_account(spec.account).owner
        stdout, stderr = (resolve_output_path(spec.cwd, path, request.job_id) for path in (spec.stdout, spec.stderr))
        return LogReply(stdout=self._read_log(stdout, owner), stderr=self._read_log(stderr, owner))

    def _read_log(self, path: str, owner: Owner) -> str:
        try:
            with open(open_log(path, self.node.job_roots, owner), "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size > TAIL_THRESHOLD_BYTES:
                    file.seek(size - TAIL_THRESHOLD_BYTES)
                return render_log(size, file.read(TAIL_THRESHOLD_BYTES))
        except (OSError, ValueError):  # not there yet, or not the job's to show
            return ""
