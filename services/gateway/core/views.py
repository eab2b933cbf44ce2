"""The query response in the original's shape, from a read-model record (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

from shared.events import JobSpec
from shared.paths import resolve_output_path
from shared.slurm_formats import format_elapsed, format_limit


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
    node: str = ""
    allocated_cpus: int = 0
    exit_code: str = ":"
    error_msg: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    @classmethod
    def submitted(cls, job_id: int, spec: JobSpec, submitted_at: datetime) -> JobRecord:
        """A job read from the log before the projection has it: pending, nothing more known."""
        return cls(
            job_id=job_id, name=spec.name, account=spec.account, partition=spec.partition, state="PENDING",
            cwd=spec.cwd, stdout_path=resolve_output_path(spec.cwd, spec.stdout, job_id),
            stderr_path=resolve_output_path(spec.cwd, spec.stderr, job_id), ntasks_per_node=spec.ntasks_per_node,
            cpus_per_task=spec.cpus_per_task, time_limit_s=spec.time_limit_s, exclusive=spec.exclusive,
            data_source=spec.data_source, submit_time=submitted_at,
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


def query_response(job: JobRecord, stdout: str, stderr: str, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "job_id": str(job.job_id),
        "state": job.state,
        "error_msg": job.error_msg,
        "time": {
            "submit_time": timestamp(job.submit_time),
            "start_time": timestamp(job.start_time),
            "end_time": timestamp(job.end_time),
            "eligible_time": timestamp(job.submit_time),
            "elapsed_time": elapsed(job, now),
            "limit_time": format_limit(job.time_limit_s),
        },
        "job_log": {"stdout": stdout, "stderr": stderr},
        "detail": {
            "job_name": job.name,
            "user": job.account,
            "partition": job.partition,
            "allocated_cpus": job.allocated_cpus or job.ntasks_per_node * job.cpus_per_task,
            "allocated_nodes": 1,
            "node_list": job.node,
            "exit_code": job.exit_code,
            "work_dir": job.cwd,
            "data_source": job.data_source,
            "account": job.account,
            "reason": reason,
        },
    }


def pending_reason(job: JobRecord, partition_live: bool, jobs_ahead: bool) -> str:
    """Slurm's reason a job waits: "None" unless it is pending and not yet placed."""
    if job.state != "PENDING" or job.node:
        return "None"
    if not partition_live:
        return "PartitionDown"
    return "Priority" if jobs_ahead else "Resources"
