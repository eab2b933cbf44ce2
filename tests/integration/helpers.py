from datetime import datetime, timezone

import psutil

from shared.bus import JetStreamEventLog
from shared.events import JobSpec, NodeRegistered

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def spec(cwd: str = "/w", script: str = "true", **fields) -> JobSpec:
    fields = {"account": "acct", "name": "job", "partition": "default", "stdout": "out-%j", "stderr": "err-%j",
              "time_limit_s": 0, **fields}
    return JobSpec(cwd=cwd, script=script, **fields)


def node(name: str = "n1", cpus: int = 2, memory_mb: int = 4096) -> NodeRegistered:
    return NodeRegistered(node=name, cpus=cpus, memory_mb=memory_mb, partitions=["default"], arch="x86_64",
                          registered_at=NOW)


async def all_events(events: JetStreamEventLog) -> list[tuple[int, object]]:
    """Every event in the stream, in order (read by sequence)."""
    last = await events.last_seq()
    found = []
    for seq in range(1, last + 1):
        if delivered := await events.read(seq):
            found.append((seq, delivered.event))
    return found


def processes_with(argument: str) -> list[psutil.Process]:
    """Processes of this machine with `argument` on their command line (tests use unusual numbers)."""
    return [p for p in psutil.process_iter(["cmdline"]) if argument in (p.info["cmdline"] or [])]
