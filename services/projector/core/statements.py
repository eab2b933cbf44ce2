"""The projection: each event as the SQL that applies it to the read model (pure).

Applied exactly once per event: the adapter runs them in one transaction with the stream
position, and never for events at or below it. Terminal states are never overwritten.
"""

from __future__ import annotations

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
)
from shared.paths import resolve_output_path

Statement = tuple[str, tuple]

NOT_TERMINAL = "state in ('PENDING', 'RUNNING')"


def statements(seq: int, event: AnyEvent) -> list[Statement]:
    match event:
        case JobSubmitted(spec=spec, submitted_at=at, traceparent=traceparent):
            return [(
                "insert into jobs (job_id, name, account, partition, state, cwd, stdout_path, stderr_path,"
                " ntasks_per_node, cpus_per_task, memory_mb, time_limit_s, exclusive, data_source, requeue,"
                " traceparent, submit_time)"
                " values (%s, %s, %s, %s, 'PENDING', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (job_id) do nothing",
                (seq, spec.name, spec.account, spec.partition, spec.cwd,
                 resolve_output_path(spec.cwd, spec.stdout, seq), resolve_output_path(spec.cwd, spec.stderr, seq),
                 spec.ntasks_per_node, spec.cpus_per_task, spec.memory_mb, spec.time_limit_s, spec.exclusive,
                 spec.data_source, spec.requeue, traceparent, at),
            )]
        case JobCancelRequested(job_id=job_id):
            return [("update jobs set cancel_requested = true where job_id = %s", (job_id,))]
        case JobAllocated(job_id=job_id, node=node, cpus=cpus, memory_mb=memory_mb, end_after=end_after):
            return [
                ("update nodes set allocated_cpus = allocated_cpus + %s, allocated_memory_mb = allocated_memory_mb + %s"
                 " where node_name = %s", (cpus, memory_mb, node)),
                (f"update jobs set node = %s, allocated_cpus = %s, allocated_memory_mb = %s, run_after = %s"
                 f" where job_id = %s and {NOT_TERMINAL}", (node, cpus, memory_mb, end_after, job_id)),
            ]
        case JobCancelled(job_id=job_id, cancelled_at=at, reason=reason):
            return [(f"update jobs set state = 'CANCELLED', exit_code = '0:0', end_time = %s, error_msg = %s"
                     f" where job_id = %s and {NOT_TERMINAL}", (at, reason or None, job_id))]
        case JobStarted(job_id=job_id, node=node, started_at=at, end_after=end_after):
            # Only the start of the job's current run: a late report from a run that was requeued
            # meanwhile changes nothing (its node is no longer the job's, or its run is an older one).
            return [("update jobs set state = 'RUNNING', start_time = %s"
                     " where job_id = %s and node = %s and run_after = %s and state = 'PENDING'",
                     (at, job_id, node, end_after))]
        case JobFinished(job_id=job_id, state=state, exit_code=exit_code, error_msg=error, started_at=started,
                         ended_at=ended, peak_memory_kb=peak_memory_kb, cpu_seconds=cpu_seconds):
            return [
                _free_node_of(job_id),
                (f"update jobs set state = %s, exit_code = %s, error_msg = %s, end_time = %s,"
                 f" start_time = coalesce(start_time, %s), peak_memory_kb = %s, cpu_seconds = %s"
                 f" where job_id = %s and {NOT_TERMINAL}",
                 (state, exit_code, error, ended, started, peak_memory_kb, cpu_seconds, job_id)),
            ]
        case JobLost(job_id=job_id, reason=reason, lost_at=at):
            return [
                _free_node_of(job_id),
                (f"update jobs set state = 'NODE_FAIL', exit_code = '0:9', error_msg = %s, end_time = %s"
                 f" where job_id = %s and {NOT_TERMINAL}", (reason, at, job_id)),
            ]
        case JobRequeued(job_id=job_id):
            return [
                _free_node_of(job_id),
                (f"update jobs set state = 'PENDING', node = '', allocated_cpus = 0, allocated_memory_mb = 0,"
                 f" start_time = null, restarts = restarts + 1 where job_id = %s and {NOT_TERMINAL}", (job_id,)),
            ]
        case NodeRegistered(node=node, cpus=cpus, memory_mb=memory_mb, partitions=partitions, arch=arch,
                            registered_at=at):
            return [(
                "insert into nodes (node_name, partitions, arch, total_cpus, memory_mb, state, registered_at)"
                " values (%s, %s, %s, %s, %s, 'UP', %s) on conflict (node_name) do update set"
                " partitions = excluded.partitions, arch = excluded.arch, total_cpus = excluded.total_cpus,"
                " memory_mb = excluded.memory_mb, state = 'UP', registered_at = excluded.registered_at",
                (node, partitions, arch, cpus, memory_mb, at),
            )]
        case NodeDown(node=node):
            return [("update nodes set state = 'DOWN' where node_name = %s", (node,))]
        case NodeDrained(node=node) | NodeResumed(node=node):
            return [("update nodes set drained = %s where node_name = %s", (isinstance(event, NodeDrained), node))]
    return []


def _free_node_of(job_id: int) -> Statement:
    """Give the job's share back to its node; first, while the job row still names it and is not ended."""
    return (f"update nodes n set allocated_cpus = n.allocated_cpus - j.allocated_cpus,"
            f" allocated_memory_mb = n.allocated_memory_mb - j.allocated_memory_mb"
            f" from jobs j where j.job_id = %s and j.node = n.node_name and j.{NOT_TERMINAL}", (job_id,))
