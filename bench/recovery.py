#!/usr/bin/env python3
"""Scheduler recovery: catch-up time from a snapshot vs from the start of the log, and fail-over
time when the active scheduler is SIGKILLed with a standby running.

catch-up   N events (the lives of N/4 jobs) in a fresh log; a scheduler folds them and snapshots,
           TAIL more events follow; then a scheduler starting from the snapshot and one replaying
           the whole log are each timed from start to "caught up".
failover   the whole stack with two schedulers; K times: SIGKILL the active one, submit a job at
           once, time until that job is placed (by the standby), then start the killed one again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
from harness import job_folder, running_stack  # noqa: E402
from rebuild import fill  # noqa: E402

from services.scheduler.core.policy import fifo_first_fit  # noqa: E402
from services.scheduler.handlers import Scheduler, pid_of  # noqa: E402
from services.scheduler.snapshots import SnapshotStore  # noqa: E402
from shared.bus import JetStreamEventLog  # noqa: E402
from shared.embedded import NatsServer, free_port  # noqa: E402


async def time_to_catch_up(events: JetStreamEventLog, snapshots: SnapshotStore | None) -> tuple[float, Scheduler]:
    scheduler = Scheduler(events, fifo_first_fit, node_timeout_s=60, snapshots=snapshots)
    started = time.monotonic()
    following = asyncio.create_task(scheduler.follow_log())
    await scheduler.caught_up.wait()
    seconds = time.monotonic() - started
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    return seconds, scheduler


async def catch_up(events_count: int, tail: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="scns-bench-catchup-"))
    nats = NatsServer(home / "nats", free_port()).start()
    try:
        events = await JetStreamEventLog.connect(nats.url, "bench-catchup")
        await fill(events, max(1, (events_count - tail) // 4))
        _, writer = await time_to_catch_up(events, None)
        assert await SnapshotStore(events).save(writer.state)
        await fill(events, max(1, tail // 4))
        total = await events.last_seq()
        from_snapshot, restored = await time_to_catch_up(events, SnapshotStore(events))
        from_start, replayed = await time_to_catch_up(events, None)
        assert restored.state == replayed.state, "the snapshot and a full replay disagree"
        await events.close()
        return {"events": total, "snapshot_at": writer.state.last_seq,
                "from_start_s": round(from_start, 3), "from_snapshot_s": round(from_snapshot, 3),
                "from_start_events_per_s": round(total / from_start),
                "speedup": round(from_start / from_snapshot, 1)}
    finally:
        nats.stop()
        shutil.rmtree(home, ignore_errors=True)


async def failover(rounds: int) -> dict:
    times = []
    with running_stack(schedulers=2) as stack:
        events = await stack.event_log("bench-failover")
        body = {"job": {"account": "bench", "name": "failover", "partition": "default",
                        "current_working_directory": str(job_folder(stack)),
                        "standard_output": "%j.out", "standard_error": "%j.err", "time_limit": "1"},
                "script": "true\n"}
        headers = {"Authorization": f"Bearer {stack.token}"}
        async with httpx.AsyncClient(base_url=stack.config.api_url, headers=headers, timeout=30) as api:
            for _ in range(rounds):
                elected = (await events.last_on("scns.scheduler.elected")).event.scheduler
                pid = pid_of(elected)
                victim = next(name for name, process in stack.services.items() if process.pid == pid)
                killed_at = time.monotonic()
                os.killpg(pid, signal.SIGKILL)
                job_id = (await api.post("/jobs/submit", json=body)).json()["job_id"]
                while await events.last_on(f"scns.job.{job_id}.allocated.*") is None:
                    await asyncio.sleep(0.01)
                times.append(time.monotonic() - killed_at)
                stack.services.pop(victim).wait()
                stack.start_service(victim)  # back as a standby
                await asyncio.sleep(2)  # let it catch up and settle before the next round
        await events.close()
    return {"rounds": rounds, "kill_to_next_placement_s": {
        "p50": round(statistics.median(times), 3), "max": round(max(times), 3),
        "all": [round(t, 3) for t in times]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tail", type=int, default=10_000, help="events after the snapshot")
    parser.add_argument("--rounds", type=int, default=5, help="fail-overs to time")
    args = parser.parse_args()
    caught = asyncio.run(catch_up(args.events, min(args.tail, args.events // 2)))
    print(f"scheduler catch-up over {caught['events']} events: from the start {caught['from_start_s']} s, "
          f"from a snapshot {caught['events'] - caught['snapshot_at']} events behind {caught['from_snapshot_s']} s "
          f"({caught['speedup']}x)")
    print(json.dumps({"bench": "scheduler-catch-up", **caught}))
    over = asyncio.run(failover(args.rounds))
    print(f"scheduler fail-over (SIGKILL of the active one -> next job placed by the standby): "
          f"p50 {over['kill_to_next_placement_s']['p50']} s, max {over['kill_to_next_placement_s']['max']} s")
    print(json.dumps({"bench": "scheduler-failover", **over}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
