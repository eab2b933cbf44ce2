"""Resident memory of each part of a running stack: the four services, NATS and PostgreSQL.

Each part is counted as its process with all its descendants (PostgreSQL's backends, the
executor's running jobs) by PSS, the resident set with every shared page divided among the
processes sharing it, so PostgreSQL's shared buffers are counted once, not once per backend."""

from __future__ import annotations

import psutil

from shared.stack import Stack


def tree_pss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:  # a job that ended meanwhile
            pass
    return round(total / 2**20, 1)


def resident_mb(stack: Stack) -> dict[str, float]:
    parts = {name: process.pid for name, process in stack.services.items()}
    parts |= {"nats": stack.nats.process.pid, "postgres": stack.postgres.process.pid}
    return {name: tree_pss_mb(pid) for name, pid in parts.items()}
