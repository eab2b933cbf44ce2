"""The REST API's output types (API.md), as msgspec Structs: encoded as they are, and the source
of the OpenAPI document's schemas. Input types live with their rules in `validation.py`."""

from __future__ import annotations

from typing import Any

import msgspec


class Wire(msgspec.Struct, kw_only=True):
    pass


class SubmitResponse(Wire):
    job_id: str


class CancelResponse(Wire):
    msg: str


class JobTimes(Wire):
    submit_time: str | None
    start_time: str | None
    end_time: str | None
    eligible_time: str | None
    elapsed_time: str
    limit_time: str


class JobLog(Wire):
    stdout: str
    stderr: str


class JobDetail(Wire):
    job_name: str
    user: str
    partition: str
    allocated_cpus: int
    allocated_nodes: int
    node_list: str
    exit_code: str
    work_dir: str
    data_source: str
    account: str
    reason: str
    requeue: bool  # new: submitted with requeue
    restarts: int  # new: how many times it was requeued (Slurm's Restarts)
    trace_id: str | None  # new: the job's OpenTelemetry trace, when the gateway traces
    peak_memory_kb: int | None  # new: the most memory the job was seen to use (KiB; Slurm's MaxRSS), once ended
    cpu_seconds: float | None  # new: user + system CPU time of its processes (Slurm's TotalCPU), once ended


class QueryResponse(Wire):
    job_id: str
    state: str
    error_msg: str | None
    time: JobTimes
    job_log: JobLog
    detail: JobDetail


class JobSummary(Wire):
    job_id: str
    name: str
    account: str
    partition: str
    state: str
    allocated_cpus: int
    node_list: str
    submit_time: str | None
    start_time: str | None
    end_time: str | None
    exit_code: str
    peak_memory_kb: int | None  # new, as in the query's detail
    cpu_seconds: float | None  # new, as in the query's detail


class JobList(Wire):
    jobs: list[JobSummary]
    next_cursor: str | None


class JobEvent(Wire):
    seq: int
    type: str
    time: str
    data: dict[str, Any]


class JobEvents(Wire):
    job_id: str
    events: list[JobEvent]


class NodeView(Wire):
    node_name: str
    partitions: list[str]
    arch: str
    total_cpus: int
    allocated_cpus: int
    memory_mb: int
    allocated_memory_mb: int
    state: str
    last_heartbeat: str | None


class NodeList(Wire):
    nodes: list[NodeView]


class JobStats(Wire):
    total: int
    running: int
    pending: int
    completed: int
    failed: int  # FAILED, TIMEOUT, OUT_OF_MEMORY and NODE_FAIL: every end that is neither success nor cancel
    cancelled: int
    timeout: int
    out_of_memory: int
    node_fail: int


class ResourceStats(Wire):
    total_cpus: int
    allocated_cpus: int
    available_cpus: int
    utilization_rate: float  # percent, two decimals


class DashboardNode(Wire):
    node_name: str
    partition: str
    total_cpus: int
    allocated_cpus: int
    available_cpus: int
    available: bool
    utilization_rate: float


class DashboardJob(Wire):
    job_id: int
    name: str
    account: str
    state: str
    allocated_cpus: int
    submit_time: str | None
    start_time: str | None


class Dashboard(Wire):
    job_stats: JobStats
    resource_stats: ResourceStats
    node_info: list[DashboardNode]
    running_jobs: list[DashboardJob]
    pending_jobs: list[DashboardJob]


class Health(Wire):
    status: str
    service: str
    checks: dict[str, str]


class About(Wire):
    service: str
    version: str
    status: str


class TokenCreated(Wire):
    name: str
    account: str
    role: str
    token: str  # shown once; only its hash is kept


class TokenInfo(Wire):
    name: str
    account: str
    role: str
    created_at: str


class TokenList(Wire):
    tokens: list[TokenInfo]


class ErrorItem(Wire):
    type: str
    loc: list[str | int]
    msg: str
    input: Any


class ValidationErrorBody(Wire):
    detail: list[ErrorItem]


class ErrorBody(Wire):
    detail: str
