"""The API's responses, built from read-model records and log entries (pure)."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import msgspec

from services.gateway.core import wire
from shared.events import Event, JobSpec
from shared.paths import resolve_output_path
from shared.slurm_formats import format_elapsed, format_limit
from shared.telemetry import trace_id_of


class JobRecord(msgspec.Struct, kw_only=True):
    """One job as the read model knows it (a row of `jobs`)."""

    job_id: int
    name: str
    account: str
    partition: str
    state: str
    cwd: str
    stdout_path: str
    stderr_path: str
    ntasks_per_node: int
    cpus_per_task: int
    time_limit_s: int
    exclusive: bool
    data_source: str
    submit_time: datetime
    requeue: bool = False
    restarts: int = 0
    traceparent: str | None = None
    node: str = ""
    allocated_cpus: int = 0
    exit_code: str = ":"
    error_msg: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    peak_memory_kb: int | None = None
    cpu_seconds: float | None = None

    @classmethod
    def submitted(cls, job_id: int, spec: JobSpec, submitted_at: datetime, traceparent: str | None) -> JobRecord:
        """A job read from the log before the projection has it: pending, nothing more known."""
        return cls(
            job_id=job_id, name=spec.name, account=spec.account, partition=spec.partition, state="PENDING",
            cwd=spec.cwd, stdout_path=resolve_output_path(spec.cwd, spec.stdout, job_id),
            stderr_path=resolve_output_path(spec.cwd, spec.stderr, job_id), ntasks_per_node=spec.ntasks_per_node,
            cpus_per_task=spec.cpus_per_task, time_limit_s=spec.time_limit_s, exclusive=spec.exclusive,
            data_source=spec.data_source, submit_time=submitted_at, requeue=spec.requeue, traceparent=traceparent,
        )


def timestamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    utc = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def elapsed(job: JobRecord, now: datetime) -> str:
    if job.start_time is None:
        return format_elapsed(0)
    return format_elapsed(((job.end_time or now) - job.start_time).total_seconds())


def requested_cpus(job: JobRecord) -> int:
    return job.allocated_cpus or job.ntasks_per_node * job.cpus_per_task


def query_response(job: JobRecord, stdout: str, stderr: str, reason: str, now: datetime) -> wire.QueryResponse:
    submitted = timestamp(job.submit_time)
    return wire.QueryResponse(
        job_id=str(job.job_id),
        state=job.state,
        error_msg=job.error_msg,
        time=wire.JobTimes(
            submit_time=submitted,
            start_time=timestamp(job.start_time),
            end_time=timestamp(job.end_time),
            eligible_time=submitted,
            elapsed_time=elapsed(job, now),
            limit_time=format_limit(job.time_limit_s),
        ),
        job_log=wire.JobLog(stdout=stdout, stderr=stderr),
        detail=wire.JobDetail(
            job_name=job.name, user=job.account, partition=job.partition, allocated_cpus=requested_cpus(job),
            allocated_nodes=1, node_list=job.node, exit_code=job.exit_code, work_dir=job.cwd,
            data_source=job.data_source, account=job.account, reason=reason, requeue=job.requeue,
            restarts=job.restarts, trace_id=trace_id_of(job.traceparent), peak_memory_kb=job.peak_memory_kb,
            cpu_seconds=job.cpu_seconds,
        ),
    )


def job_summary(job: JobRecord) -> wire.JobSummary:
    return wire.JobSummary(
        job_id=str(job.job_id), name=job.name, account=job.account, partition=job.partition, state=job.state,
        allocated_cpus=requested_cpus(job), node_list=job.node, submit_time=timestamp(job.submit_time),
        start_time=timestamp(job.start_time), end_time=timestamp(job.end_time), exit_code=job.exit_code,
        peak_memory_kb=job.peak_memory_kb, cpu_seconds=job.cpu_seconds,
    )


def dashboard_job(job: JobRecord) -> wire.DashboardJob:
    return wire.DashboardJob(
        job_id=job.job_id, name=job.name, account=job.account, state=job.state, allocated_cpus=requested_cpus(job),
        submit_time=timestamp(job.submit_time), start_time=timestamp(job.start_time),
    )


def encode_cursor(job_id: int) -> str:
    return base64.urlsafe_b64encode(f"before:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The job id a page continues below; ValueError for a cursor we did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor is not one this API returned") from exc
    prefix, _, value = text.partition(":")
    if prefix != "before" or not value.isdigit():
        raise ValueError("cursor is not one this API returned")
    return int(value)


class NodeRecord(msgspec.Struct, kw_only=True):
    """One node as the read model knows it (a row of `nodes`)."""

    node_name: str
    partitions: list[str]
    arch: str
    total_cpus: int
    memory_mb: int
    state: str  # UP | DOWN
    drained: bool
    allocated_cpus: int
    allocated_memory_mb: int
    registered_at: datetime


def node_state(node: NodeRecord) -> str:
    """sinfo's state: DOWN, DRAIN, else by allocation IDLE / MIXED / ALLOCATED."""
    if node.state != "UP":
        return node.state
    if node.drained:
        return "DRAIN"
    if node.allocated_cpus <= 0:
        return "IDLE"
    return "ALLOCATED" if node.allocated_cpus >= node.total_cpus else "MIXED"


def node_view(node: NodeRecord, last_heartbeat: datetime | None) -> wire.NodeView:
    return wire.NodeView(
        node_name=node.node_name, partitions=node.partitions, arch=node.arch, total_cpus=node.total_cpus,
        allocated_cpus=node.allocated_cpus, memory_mb=node.memory_mb, allocated_memory_mb=node.allocated_memory_mb,
        state=node_state(node), last_heartbeat=timestamp(last_heartbeat or node.registered_at),
    )


def percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def dashboard(counts: dict[str, int], nodes: list[NodeRecord], running: list[JobRecord],
              pending: list[JobRecord]) -> wire.Dashboard:
    live = [node for node in nodes if node.state == "UP"]  # drained ones too: their jobs still run
    total = sum(node.total_cpus for node in live)
    allocated = sum(min(node.allocated_cpus, node.total_cpus) for node in live)
    failed_states = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
    return wire.Dashboard(
        job_stats=wire.JobStats(
            total=sum(counts.values()), running=counts.get("RUNNING", 0), pending=counts.get("PENDING", 0),
            completed=counts.get("COMPLETED", 0), failed=sum(counts.get(state, 0) for state in failed_states),
            cancelled=counts.get("CANCELLED", 0), timeout=counts.get("TIMEOUT", 0),
            out_of_memory=counts.get("OUT_OF_MEMORY", 0), node_fail=counts.get("NODE_FAIL", 0),
        ),
        resource_stats=wire.ResourceStats(
            total_cpus=total, allocated_cpus=allocated, available_cpus=total - allocated,
            utilization_rate=percent(allocated, total),
        ),
        node_info=[
            wire.DashboardNode(
                node_name=node.node_name, partition=",".join(node.partitions), total_cpus=node.total_cpus,
                allocated_cpus=node.allocated_cpus, available_cpus=max(0, node.total_cpus - node.allocated_cpus),
                available=node.state == "UP", utilization_rate=percent(node.allocated_cpus, node.total_cpus),
            )
            for node in nodes
        ],
        running_jobs=[dashboard_job(job) for job in running],
        pending_jobs=[dashboard_job(job) for job in pending],
    )


def job_events(job_id: int, entries: list[tuple[int, datetime, Event]]) -> wire.JobEvents:
    """A job's history as the log holds it: (sequence, time stored, event) in stream order."""
    events = []
    for seq, stored_at, event in entries:
        data = msgspec.to_builtins(event)
        kind = data.pop("type")
        events.append(wire.JobEvent(seq=seq, type=kind, time=timestamp(stored_at), data=data))
    return wire.JobEvents(job_id=str(job_id), events=events)


def waits_behind(job: JobRecord, queue_heads: dict[str, int]) -> bool:
    """Whether an earlier job of the job's partition waits to be placed (`queue_heads`: the earliest
    waiting job of each partition where one waits)."""
    head = queue_heads.get(job.partition)
    return head is not None and head < job.job_id


def pending_reason(job: JobRecord, partition_live: bool, jobs_ahead: bool) -> str:
    """Slurm's reason a job waits: "None" unless it is pending and not yet placed."""
    if job.state != "PENDING" or job.node:
        return "None"
    if not partition_live:
        return "PartitionDown"
    return "Priority" if jobs_ahead else "Resources"
