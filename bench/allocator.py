#!/usr/bin/env python3
"""Decision rate of the pure allocator (services/scheduler/core: FIFO + First Fit), no stack.

For each (pending jobs, nodes) of a grid, with 1-CPU jobs and nodes of NODE_CPUS CPUs:
  bulk    one pass over an idle cluster: as many decisions as fit; microseconds per decision.
  steady  a full cluster with the pending jobs queued behind it, the drain's situation: a job
          finishes on a random node, one pass places one job; microseconds per such pass.
The growth factors follow each dimension alone, the other at its largest: flat is 1, logarithmic a
small number, linear about the size's ratio, quadratic its square.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.scheduler.core.policy import fifo_first_fit  # noqa: E402
from services.scheduler.core.state import SchedulerState, assume, evolve  # noqa: E402
from shared.events import JobAllocated, JobFinished, JobSpec, JobSubmitted, NodeRegistered  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
NODE_CPUS = 16
JOB_MEMORY_MB = 100
SPEC = JobSpec(account="bench", name="b", partition="default", cwd="/w", stdout="o", stderr="e", script="true",
               time_limit_s=0, memory_mb=JOB_MEMORY_MB)
SUBMITTED = JobSubmitted(spec=SPEC, submitted_at=NOW)


def cluster(nodes: int) -> SchedulerState:
    state = SchedulerState()
    for seq in range(1, nodes + 1):
        evolve(state, seq, NodeRegistered(node=f"n{seq}", cpus=NODE_CPUS, memory_mb=NODE_CPUS * JOB_MEMORY_MB,
                                          partitions=["default"], arch="x86_64", registered_at=NOW))
    return state


def submit(state: SchedulerState, jobs: int) -> list[int]:
    first = state.last_seq + 1
    for seq in range(first, first + jobs):
        evolve(state, seq, SUBMITTED)
    return list(range(first, first + jobs))


def bulk_pass(pending: int, nodes: int) -> dict:
    state = cluster(nodes)
    submit(state, pending)
    started = time.perf_counter()
    decisions = fifo_first_fit(state, NOW)
    seconds = time.perf_counter() - started
    return {"decisions": len(decisions), "us_per_decision": round(seconds * 1e6 / len(decisions), 2)}


def steady_passes(pending: int, nodes: int, rounds: int, rng: random.Random) -> dict:
    state = cluster(nodes)
    running = submit(state, nodes * NODE_CPUS)
    for job_id in running:  # fill every node through the log's events, not through the policy
        node = f"n{(job_id - running[0]) // NODE_CPUS + 1}"
        evolve(state, state.last_seq + 1, JobAllocated(job_id=job_id, node=node, cpus=1, memory_mb=JOB_MEMORY_MB,
                                                       allocated_at=NOW))
    submit(state, pending)
    seconds = 0.0
    for _ in range(rounds):
        ended = running.pop(rng.randrange(len(running)))
        evolve(state, state.last_seq + 1, JobFinished(job_id=ended, node=state.placed[ended].node,
                                                      state="COMPLETED", exit_code="0:0", ended_at=NOW))
        started = time.perf_counter()
        decisions = fifo_first_fit(state, NOW)
        seconds += time.perf_counter() - started
        assert len(decisions) == 1, "a full cluster with one free CPU takes one job"
        assume(state, decisions[0], state.last_seq + 1)
        running.append(decisions[0].job_id)
    return {"us_per_decision": round(seconds * 1e6 / rounds, 2)}


def growth(start: dict, end: dict, along: str) -> dict:
    return {"along": along, "size_ratio": end[along] / start[along],
            **{kind: round(end[kind]["us_per_decision"] / start[kind]["us_per_decision"], 1)
               for kind in ("bulk", "steady")}}


def measure(pending_counts: list[int], node_counts: list[int], rounds: int) -> dict:
    rng = random.Random(7)
    grid = {(pending, nodes): {"pending": pending, "nodes": nodes, "bulk": bulk_pass(pending, nodes),
                               "steady": steady_passes(pending, nodes, rounds, rng)}
            for pending in pending_counts for nodes in node_counts}
    most_pending, most_nodes = max(pending_counts), max(node_counts)
    largest = grid[most_pending, most_nodes]
    return {
        "node_cpus": NODE_CPUS,
        "steady_rounds": rounds,
        "grid": list(grid.values()),
        "largest": {"pending": most_pending, "nodes": most_nodes,
                    "decisions_per_s_bulk": round(1e6 / largest["bulk"]["us_per_decision"]),
                    "decisions_per_s_steady": round(1e6 / largest["steady"]["us_per_decision"])},
        # Each dimension alone, the other at its largest.
        "growth": [growth(grid[most_pending, min(node_counts)], largest, "nodes"),
                   growth(grid[min(pending_counts), most_nodes], largest, "pending")],
    }


def print_grid(result: dict) -> None:
    print(f"\npure allocator (FIFO + First Fit), 1-CPU jobs, {result['node_cpus']}-CPU nodes: "
          f"µs per decision, bulk pass / steady pass (one free CPU, {result['steady_rounds']} rounds)")
    print(f"  {'pending':>8} {'nodes':>6} {'bulk':>10} {'steady':>10}")
    for point in result["grid"]:
        print(f"  {point['pending']:>8} {point['nodes']:>6} {point['bulk']['us_per_decision']:>10} "
              f"{point['steady']['us_per_decision']:>10}")
    for step in result["growth"]:
        print(f"  {step['along']} x{step['size_ratio']:g} (the other at its largest): cost per decision "
              f"bulk x{step['bulk']}, steady x{step['steady']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pending", default="1000,5000,10000", help="pending jobs, comma-separated")
    parser.add_argument("--nodes", default="100,500,1000", help="nodes, comma-separated")
    parser.add_argument("--rounds", type=int, default=200, help="steady passes per point")
    args = parser.parse_args()
    result = measure([int(n) for n in args.pending.split(",")], [int(n) for n in args.nodes.split(",")], args.rounds)
    print_grid(result)
    print(json.dumps({"bench": "allocator", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
