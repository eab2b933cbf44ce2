"""Scheduling policies: (state, now) -> decisions. Pure, deterministic, replaceable by name.

FIFO + First Fit: within a partition, jobs are taken strictly in submission order; each goes
to the first live node (in registration order) that serves the partition and has the CPUs and
memory free. A job that fits nowhere blocks the jobs behind it in its partition, so big jobs
are not starved by a stream of small ones (Slurm's builtin scheduler, without backfill).
Decisions are computed against the state plus the plan so far, so one pass never over-commits;
the first node with room is found through the state's index (core/capacity.py), in time
logarithmic in the nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.scheduler.core.capacity import Planned, planning
from services.scheduler.core.state import Node, PendingJob, SchedulerState
from shared.events import JobAllocated, JobCancelled, JobLost, JobRequeued

Decision = JobAllocated | JobCancelled | JobLost | JobRequeued
LOST_REASON = "Node {node} stopped answering while it held the job"
Policy = Callable[[SchedulerState, datetime], list[Decision]]


def request_of(node: Node, job: PendingJob) -> tuple[int, int]:
    """(cpus, memory) the job takes on this node: all of it when exclusive."""
    return (node.cpus, node.memory_mb) if job.exclusive else (job.cpus, job.memory_mb)


def endings(state: SchedulerState, now: datetime) -> list[Decision]:
    """The runs the scheduler ends itself: cancelled before they started, or lost with their node
    (the job queued again when submitted with `requeue`)."""
    decisions: list[Decision] = [JobCancelled(job_id=job_id, cancelled_at=now, reason=reason)
                                 for job_id, reason in sorted(state.cancel_requested.items())]
    for job_id, node in sorted(state.lost.items()):
        run, reason = state.placed[job_id].job, LOST_REASON.format(node=node)
        if run.requeue:
            decisions.append(JobRequeued(job_id=job_id, node=node, reason=reason, requeued_at=now,
                                         end_after=run.end_after))
        else:
            decisions.append(JobLost(job_id=job_id, node=node, reason=reason, lost_at=now, end_after=run.end_after))
    return decisions


def fifo_first_fit(state: SchedulerState, now: datetime) -> list[Decision]:
    decisions = endings(state, now)
    capacity = state.free_capacity()
    with planning(capacity, state.nodes) as planned:
        for partition, queue in state.queues.items():
            for job in queue.values():
                if job.job_id in state.cancel_requested:
                    continue
                name = capacity.first_fit(partition, job.cpus, job.memory_mb, job.exclusive)
                if name is None:
                    break  # strict FIFO: the head of the partition waits, and so does everything behind it
                node = state.nodes[name]
                cpus, memory_mb = request_of(node, job)
                taken = planned.setdefault(name, Planned())
                taken.cpus, taken.memory_mb, taken.jobs = taken.cpus + cpus, taken.memory_mb + memory_mb, taken.jobs + 1
                capacity.refresh(node, taken)
                decisions.append(JobAllocated(job_id=job.job_id, node=name, cpus=cpus, memory_mb=memory_mb,
                                              allocated_at=now, end_after=job.end_after))
    return decisions


POLICIES: dict[str, Policy] = {"fifo-first-fit": fifo_first_fit}
