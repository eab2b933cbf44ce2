"""The queue as `queue --watch` keeps it: a listing of GET /jobs, then the events of the log
applied one by one (pure). Applying an event twice, or an event older than the listing, changes
nothing once the events after it are applied too: a job's state is set by its latest event."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobFilter:
    """Which jobs a queue shows; empty collections mean "any"."""

    states: Collection[str] = ("PENDING", "RUNNING")
    accounts: Collection[str] = ()
    partitions: Collection[str] = ()
    names: Collection[str] = ()
    job_ids: Collection[str] = ()

    def matches(self, job: dict[str, Any]) -> bool:
        return ((not self.states or job.get("state") in self.states)
                and (not self.accounts or job.get("account") in self.accounts)
                and (not self.partitions or job.get("partition") in self.partitions)
                and (not self.names or job.get("name") in self.names)
                and (not self.job_ids or str(job.get("job_id")) in self.job_ids))


def summary_of_query(answer: dict[str, Any]) -> dict[str, Any]:
    """A GET /jobs/query answer in the shape of GET /jobs's JobSummary (plus its reason)."""
    detail, times = answer.get("detail", {}), answer.get("time", {})
    return {"job_id": str(answer["job_id"]), "name": detail.get("job_name", ""), "account": detail.get("account", ""),
            "partition": detail.get("partition", ""), "state": answer.get("state", ""),
            "allocated_cpus": detail.get("allocated_cpus", 0), "node_list": detail.get("node_list", ""),
            "submit_time": times.get("submit_time"), "start_time": times.get("start_time"),
            "end_time": times.get("end_time"), "exit_code": detail.get("exit_code", ":"),
            "peak_memory_kb": detail.get("peak_memory_kb"), "cpu_seconds": detail.get("cpu_seconds"),
            "reason": detail.get("reason", "None")}


@dataclass
class QueueView:
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # every job learnt of, whatever its state

    def load(self, summaries: list[dict[str, Any]]) -> None:
        for summary in summaries:
            self.jobs[int(summary["job_id"])] = dict(summary)

    def apply(self, seq: int, kind: str, data: dict[str, Any]) -> int | None:
        """Apply one event; the id of a job it is about that this view does not know (to be read
        from the API), else None."""
        if kind == "JobSubmitted":
            spec = data.get("spec", {})
            self.jobs[seq] = {
                "job_id": str(seq), "name": spec.get("name", ""), "account": spec.get("account", ""),
                "partition": spec.get("partition", ""), "state": "PENDING",
                "allocated_cpus": spec.get("ntasks_per_node", 1) * spec.get("cpus_per_task", 1),
                "node_list": "", "submit_time": data.get("submitted_at"), "start_time": None, "end_time": None,
                "exit_code": ":", "reason": None,
            }
            return None
        job_id = data.get("job_id")
        if not isinstance(job_id, int):
            return None  # a node or scheduler event
        job = self.jobs.get(job_id)
        if job is None:
            return job_id if kind != "JobCancelRequested" else None
        if kind == "JobAllocated":
            job.update(state="PENDING", node_list=data.get("node", ""), allocated_cpus=data.get("cpus", 0),
                       reason="None", start_time=None, end_time=None)
        elif kind == "JobStarted":
            job.update(state="RUNNING", node_list=data.get("node", job["node_list"]),
                       start_time=data.get("started_at"), reason="None")
        elif kind == "JobFinished":
            job.update(state=data.get("state", "FAILED"), exit_code=data.get("exit_code", ":"),
                       end_time=data.get("ended_at"), reason="None")
            if data.get("started_at"):
                job["start_time"] = data["started_at"]
        elif kind == "JobCancelled":
            job.update(state="CANCELLED", exit_code="0:0", end_time=data.get("cancelled_at"), reason="None")
        elif kind == "JobLost":
            job.update(state="NODE_FAIL", exit_code="0:9", end_time=data.get("lost_at"), reason="None")
        elif kind == "JobRequeued":
            job.update(state="PENDING", node_list="", start_time=None, end_time=None, reason=None)
        return None

    def shown(self, selection: JobFilter) -> list[dict[str, Any]]:
        return [job for _, job in sorted(self.jobs.items()) if selection.matches(job)]


def is_end(kind: str) -> bool:
    """Whether an event ends a job (a requeue only ends a run)."""
    return kind in ("JobFinished", "JobCancelled", "JobLost")


def end_of(kind: str, data: dict[str, Any]) -> tuple[str, str]:
    """(state, exit code) that an end event gives its job (API.md's exit codes)."""
    if kind == "JobFinished":
        return data.get("state", "FAILED"), data.get("exit_code", ":")
    if kind == "JobCancelled":
        return "CANCELLED", "0:0"
    return "NODE_FAIL", "0:9"


def exit_status(state: str, exit_code: str) -> int:
    """What `submit --wait` exits with: the job's exit status; 128+N when a signal N ended it; 1
    for any other unsuccessful end that reports status 0 (a job cancelled before it ran)."""
    status, _, signal = (exit_code or ":").partition(":")
    code = int(status) if status.isdigit() else 0
    number = int(signal) if signal.isdigit() else 0
    if code:
        return min(code, 255)
    if number:
        return min(128 + number, 255)
    return 0 if state == "COMPLETED" else 1
