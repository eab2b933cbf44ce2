"""CPU time of each part of a running stack, to say where a benchmark's time went.

Counted per part as the user + system seconds of its process and of the children it has waited
for: the executor's include its jobs' processes (each reaped by its supervising shell, that shell
by the executor), PostgreSQL's its backends. A figure per job divides the CPU a run used by its
jobs; unlike a rate it barely moves when something else shares the machine."""

from __future__ import annotations

import psutil

from shared.stack import Stack


def cpu_seconds(stack: Stack) -> dict[str, float]:
    parts = {name: process.pid for name, process in stack.services.items()}
    parts |= {"nats": stack.nats.process.pid, "postgres": stack.postgres.process.pid}
    usage = {}
    for name, pid in parts.items():
        times = psutil.Process(pid).cpu_times()
        usage[name] = times.user + times.system
        if name == "executor":
            usage["jobs"] = times.children_user + times.children_system
        elif name == "postgres":  # its backends: the ended ones waited for, the others as they are now
            usage[name] += times.children_user + times.children_system + sum(map(_own_seconds, psutil.Process(pid).children()))
    return usage


def _own_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:  # ended meanwhile: its time is among its parent's children's
        return 0.0
    return times.user + times.system


def ms_per_job(before: dict[str, float], after: dict[str, float], jobs: int, client_cpu_s: float) -> dict[str, float]:
    """CPU milliseconds per job of each part between two readings, the load generator's included."""
    per_job = {part: round(1000 * (after[part] - before[part]) / jobs, 2) for part in after}
    per_job["loadgen"] = round(1000 * client_cpu_s / jobs, 2)
    per_job["total"] = round(sum(per_job.values()), 2)
    return per_job
