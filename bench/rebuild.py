#!/usr/bin/env python3
"""Projector rebuild rate: N synthetic events (the life of N/4 jobs) in a fresh log, replayed into a
fresh read model by the real projector against real NATS and PostgreSQL. Prints events/s."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.projector.adapters.postgres import PostgresReadModel, writer_pool  # noqa: E402
from services.projector.handlers import Projector  # noqa: E402
from shared.bus import JetStreamEventLog  # noqa: E402
from shared.embedded import NatsServer, PostgresServer, free_port  # noqa: E402
from shared.events import (  # noqa: E402
    JobAllocated,
    JobFinished,
    JobSpec,
    JobStarted,
    JobSubmitted,
    NodeRegistered,
    encode,
    subject_of,
)

NOW = datetime.now(timezone.utc)
SPEC = JobSpec(account="bench", name="b", partition="default", cwd="/w", stdout="o", stderr="e", script="true",
               time_limit_s=60)


async def fill(events: JetStreamEventLog, jobs: int) -> None:
    """Publish the lives of `jobs` jobs after the log's end, pipelined (publish_async), as fast as
    JetStream takes them."""
    js = events.nc.jetstream(publish_async_max_pending=4000)
    seq, _ = await events.publish(NodeRegistered(node="n1", cpus=10**6, memory_mb=10**9, partitions=["default"],
                                                 arch="x86_64", registered_at=NOW))
    for _ in range(jobs):
        job_id = seq + 1
        life = [JobSubmitted(spec=SPEC, submitted_at=NOW),
                JobAllocated(job_id=job_id, node="n1", cpus=1, memory_mb=1, allocated_at=NOW),
                JobStarted(job_id=job_id, node="n1", pid=1, started_at=NOW),
                JobFinished(job_id=job_id, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW)]
        for event in life:
            await js.publish_async(subject_of(event), encode(event))
        seq += len(life)
    await js.publish_async_completed()


async def measure(jobs: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="scns-bench-rebuild-"))
    home.chmod(0o755)
    nats = NatsServer(home / "nats", free_port()).start()
    postgres = PostgresServer(home / "pg" / "data", free_port(), runtime_dir=home / "pg").start()
    try:
        events = await JetStreamEventLog.connect(nats.url, "bench-rebuild")
        await fill(events, jobs)
        total = await events.last_seq()
        pool = writer_pool(postgres.dsn())
        await pool.open()
        model = PostgresReadModel(pool)
        await model.migrate()
        started = time.monotonic()
        report = await Projector(events, model).rebuild()
        seconds = time.monotonic() - started
        await pool.close()
        await events.close()
        return {"events": total, "replayed": report.events,
                "seconds": round(seconds, 2), "events_per_s": round(report.events / seconds, 1)}
    finally:
        postgres.stop()
        nats.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    result = asyncio.run(measure(max(1, args.events // 4)))
    print(f"projector rebuild: {result['replayed']} events in {result['seconds']} s = "
          f"{result['events_per_s']} events/s")
    print(json.dumps({"bench": "rebuild", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
