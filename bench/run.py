#!/usr/bin/env python3
"""`./just bench [--quick] [--only NAME,...]`: every benchmark against stacks it starts and stops.

Prints, at the end, one table (our figure, the goal of issue 7, their ratio, Slurm 22.05 and the
original SCNS-Conductor) and one JSON line per benchmark, so runs can be compared. Benchmarks:
  latency      submit -> RUNNING and submit -> finished, one job at a time on an idle system
  cancel       cancel of a running job -> CANCELLED (stays so, process gone)
  submit       submit throughput and latency at 1, 32 and 128 concurrent clients
  query        query rate and latency of 32 clients, alone and under as many submitting (jobs left
               PENDING by the submit benchmark), and alone over ended jobs (whose output is shown)
  wrk          the gateway's ceilings, by wrk: submit (bench/submit.lua) at 1, 32, 128 connections;
               query (bench/query.lua) at 32, alone and under as many connections submitting, and
               alone over ended jobs
  sync-always  submit at 1, 32 and 128 clients with NATS fsyncing before every ack
  drain        1,000 and 10,000 trivial jobs with the executor declaring 2, 16 and 256 CPUs; the CPU
               time each part took per job (bench/cpu.py); the resident memory of each part at
               rest, after the largest drain and after a pause
  client-ceiling
               the load generator's own ceiling: its submit, query and drain runs against a server
               that does no work (bench/null_server.py); no server is measured above it through it
  allocator    the pure allocator's cost per decision over a grid of pending jobs x nodes
  rebuild      the projector replaying 1,000,000 events into a fresh read model
  durability   JetStream publish rates: one server (default sync, sync always), 3 servers R3
  recovery     scheduler catch-up from a snapshot vs from the start; fail-over after a SIGKILL
  tracing      submit throughput with tracing off and on
Unless `sync-always` says otherwise, the stacks run NATS in its default durability mode (one
server, fsync every 2 minutes). The submit benchmarks drain the node first, so their jobs stay
PENDING and the figures are the submit path's alone; the drain benchmark's submits run alongside
the jobs. --quick shrinks every count for a smoke run of about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import allocator  # noqa: E402
import client_ceiling  # noqa: E402
import cpu  # noqa: E402
import durability  # noqa: E402
import http_api  # noqa: E402
import memory  # noqa: E402
import rebuild  # noqa: E402
import recovery  # noqa: E402
import tracing  # noqa: E402
import wrk  # noqa: E402
from harness import running_stack  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    latency_samples: int
    cancel_samples: int
    submit_jobs: dict[int, int]  # concurrent clients -> jobs submitted
    query_seconds: float
    wrk_seconds: int
    drain_jobs: tuple[int, ...]
    drain_cpus: tuple[int, ...]
    settle_seconds: float  # after the last drain, before memory is measured again
    allocator_pending: tuple[int, ...]
    allocator_nodes: tuple[int, ...]
    allocator_rounds: int
    rebuild_events: int
    durability_events: int
    recovery_events: int
    failover_rounds: int
    tracing_jobs: int


FULL = Sizes(latency_samples=30, cancel_samples=10, submit_jobs={1: 500, 32: 2000, 128: 2000}, query_seconds=10,
             wrk_seconds=10, drain_jobs=(1000, 10_000), drain_cpus=(2, 16, 256), settle_seconds=15,
             allocator_pending=(1000, 5000, 10_000), allocator_nodes=(100, 500, 1000), allocator_rounds=200,
             rebuild_events=1_000_000, durability_events=5000, recovery_events=100_000, failover_rounds=5,
             tracing_jobs=2000)
QUICK = Sizes(latency_samples=5, cancel_samples=3, submit_jobs={1: 50, 32: 200, 128: 200}, query_seconds=3,
              wrk_seconds=2, drain_jobs=(200,), drain_cpus=(16,), settle_seconds=3,
              allocator_pending=(1000, 2000), allocator_nodes=(100, 200), allocator_rounds=50,
              rebuild_events=50_000, durability_events=1000, recovery_events=10_000, failover_rounds=2,
              tracing_jobs=200)

# These share one stack (2 CPUs), in this order: its node takes jobs for the first two, then it is
# drained (http_api.hold_new_jobs) so that the submits of the rest stay PENDING.
ON_MAIN_STACK = ("latency", "cancel", "submit", "query", "wrk")
NAMES = (*ON_MAIN_STACK, "sync-always", "drain", "client-ceiling", "allocator", "rebuild", "durability", "recovery", "tracing")
GOAL_DRAIN = {2: 100, 16: 300, 256: 400}
SLURM_DRAIN = {2: "2", 16: "16", 256: "74–84"}
MEMORY_PARTS = ("gateway", "projector", "scheduler", "executor", "nats", "postgres")
ALONE = "the load generator alone, against a server doing nothing"
CPU_PARTS = ("total", "jobs", "executor", "loadgen", "gateway", "projector", "nats", "scheduler", "postgres")


def main_stack(sizes: Sizes, selected: set[str], record: Callable[[str, Callable[[], dict]], None]) -> None:
    with running_stack(total_cpus=2) as stack:
        record("latency", lambda: http_api.latency(stack, sizes.latency_samples))
        record("cancel", lambda: http_api.cancel(stack, sizes.cancel_samples))
        if selected & {"query", "wrk"}:
            http_api.run_jobs_to_their_end(stack)
        if selected & {"submit", "query", "wrk"}:
            http_api.hold_new_jobs(stack)
        record("submit", lambda: http_api.submit(stack, sizes.submit_jobs))
        record("query", lambda: http_api.query(stack, sizes.query_seconds))
        record("wrk", lambda: wrk.ceilings(stack, sizes.wrk_seconds, tuple(sizes.submit_jobs),
                                           http_api.queryable_ids(stack), http_api.job_ids(stack, "COMPLETED")))


def sync_always(sizes: Sizes) -> dict:
    with running_stack(total_cpus=2, sync_always=True) as stack:
        http_api.hold_new_jobs(stack)
        return http_api.submit(stack, sizes.submit_jobs)


def drains(sizes: Sizes) -> dict:
    """A stack per CPU count; memory is followed on the last (the most jobs at once)."""
    runs, resident = {}, {}
    for cpus in sizes.drain_cpus:
        with running_stack(total_cpus=cpus) as stack:
            watch_memory = cpus == sizes.drain_cpus[-1]
            if watch_memory:
                resident["at_rest"] = memory.resident_mb(stack)
            for jobs in sizes.drain_jobs:
                before = cpu.cpu_seconds(stack)
                run = runs[f"{cpus}cpus-{jobs}"] = http_api.drain(stack, jobs)
                run["cpu_ms_per_job"] = cpu.ms_per_job(before, cpu.cpu_seconds(stack), jobs, run["client_cpu_s"])
            if watch_memory:
                resident["after_drain"] = memory.resident_mb(stack)
                time.sleep(sizes.settle_seconds)
                resident["settled"] = memory.resident_mb(stack)
    faults = {fault: sum(run[fault] for run in runs.values())
              for fault in ("lost_never_terminal", "wrong_terminal_state", "bad_stdout")}
    return {"runs": runs, "faults": faults,
            "memory_mb": {"cpus": sizes.drain_cpus[-1], "after_jobs": sizes.drain_jobs[-1],
                          "settle_s": sizes.settle_seconds, **resident}}


def recovered(sizes: Sizes) -> dict:
    events = sizes.recovery_events
    return {"catch_up": asyncio.run(recovery.catch_up(events, min(10_000, events // 2))),
            "failover": asyncio.run(recovery.failover(sizes.failover_rounds))}


def other_benchmarks(sizes: Sizes) -> dict[str, Callable[[], dict]]:
    return {
        "sync-always": lambda: sync_always(sizes),
        "drain": lambda: drains(sizes),
        "client-ceiling": lambda: client_ceiling.measure(sizes.submit_jobs, sizes.query_seconds, sizes.drain_jobs),
        "allocator": lambda: allocator.measure(list(sizes.allocator_pending), list(sizes.allocator_nodes),
                                               sizes.allocator_rounds),
        "rebuild": lambda: asyncio.run(rebuild.measure(sizes.rebuild_events // 4)),
        "durability": lambda: asyncio.run(durability.run(sizes.durability_events)),
        "recovery": lambda: recovered(sizes),
        "tracing": lambda: tracing.overhead(sizes.tracing_jobs),
    }


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    label: str
    bench: str
    paths: tuple[tuple[str | int, ...], ...]  # one figure, or several shown as "a / b"
    goal: float | None = None
    higher_is_better: bool = True
    slurm: str = ""
    original: str = ""


def counted(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def rows(sizes: Sizes) -> list[Row]:
    table = []
    for clients in sizes.submit_jobs:
        table.append(Row(f"submit, {counted(clients, 'client')}, jobs/s", "submit", ((f"c{clients}", "throughput_jobs_per_s"),),
                         goal=2500, slurm="~1,000", original="~200"))
        table.append(Row(f"submit latency, {counted(clients, 'client')}, p50 / p99 ms", "submit",
                         ((f"c{clients}", "submit_latency_ms", "p50"), (f"c{clients}", "submit_latency_ms", "p99"))))
    for clients in sizes.submit_jobs:
        table.append(Row(f"submit, {counted(clients, 'client')}, jobs/s: {ALONE}", "client-ceiling",
                         (("submit", f"c{clients}", "throughput_jobs_per_s"),), goal=2500))
    for clients in sizes.submit_jobs:
        table.append(Row(f"submit (wrk), {counted(clients, 'connection')}, requests/s", "wrk",
                         (("submit", f"c{clients}", "requests_per_s"),), goal=2500, slurm="~1,000", original="~200"))
        table.append(Row(f"submit (wrk), {counted(clients, 'connection')}, p50 / p99 ms", "wrk",
                         (("submit", f"c{clients}", "latency_ms", "p50"), ("submit", f"c{clients}", "latency_ms", "p99"))))
    for clients in sizes.submit_jobs:
        table.append(Row(f"submit, sync always, {counted(clients, 'client')}, jobs/s", "sync-always",
                         ((f"c{clients}", "throughput_jobs_per_s"),), goal=2500, slurm="~1,000", original="~200"))
    for stage, percentile, goal, slurm, original in (("running", "p50", 20, "560", "3,100"),
                                                     ("running", "p99", 100, "1,000", "4,900")):
        table.append(Row(f"submit → RUNNING, client (10 ms polling), {percentile} ms", "latency",
                         (("client_submit_to_running_ms", percentile),), goal, False, slurm, original))
        table.append(Row(f"submit → start, server timestamps, {percentile} ms", "latency",
                         (("server_submit_to_start_ms", percentile),), goal, False, slurm, original))
    table.append(Row("submit → RUNNING, client: samples in which a query saw RUNNING / samples", "latency",
                     (("running_observed",), ("samples",))))
    table.append(Row("submit → RUNNING, client, a job that runs 0.2 s, p50 / p99 ms",
                     "latency", tuple(("longer_job", "client_submit_to_running_ms", percentile)
                                      for percentile in ("p50", "p99"))))
    table.append(Row("submit → RUNNING, client: floor here (its 3 requests as `GET /`, 10 ms apart), p50 ms",
                     "latency", (("client_floor_ms",),)))
    table.append(Row("submit → finished, client, p50 / p99 ms", "latency",
                     (("client_submit_to_terminal_ms", "p50"), ("client_submit_to_terminal_ms", "p99"))))
    table.append(Row("cancel of a running job → CANCELLED, p50 ms", "cancel", (("cancel_to_terminal_ms", "p50"),),
                     goal=30, higher_is_better=False, slurm="~40"))
    table.append(Row("cancel: samples / stayed CANCELLED with process gone / processes left", "cancel",
                     (("samples",), ("ok",), ("leftover_processes",))))
    for cpus in sizes.drain_cpus:
        for jobs in sizes.drain_jobs:
            table.append(Row(f"drain of {jobs:,} jobs, {cpus} CPUs, completed jobs/s", "drain",
                             (("runs", f"{cpus}cpus-{jobs}", "completed_per_s"),), goal=GOAL_DRAIN.get(cpus),
                             slurm=SLURM_DRAIN.get(cpus, ""), original="~1.6"))
    last = f"{sizes.drain_cpus[-1]}cpus-{sizes.drain_jobs[-1]}"
    for jobs in sizes.drain_jobs:
        table.append(Row(f"drain of {jobs:,} jobs, completed jobs/s: {ALONE}", "client-ceiling",
                         (("drain", str(jobs), "completed_per_s"),)))
    table.append(Row(f"submit while draining ({last}), jobs/s", "drain",
                     (("runs", last, "submit_throughput_jobs_per_s"),)))
    table.append(Row(f"CPU ms per job ({last}): {' / '.join(CPU_PARTS)}", "drain",
                     tuple(("runs", last, "cpu_ms_per_job", part) for part in CPU_PARTS)))
    table.append(Row("drains: lost / wrong state / wrong stdout", "drain",
                     (("faults", "lost_never_terminal"), ("faults", "wrong_terminal_state"), ("faults", "bad_stdout"))))
    for load, label in (("idle", "alone"), ("ended", "alone, ended jobs"),
                        ("under_submit_load", "under submit load")):
        table.append(Row(f"query, 32 clients {label}, queries/s", "query", ((load, "queries_per_s"),), goal=3000,
                         original="~240"))
        table.append(Row(f"query, 32 clients {label}, p99 ms", "query", ((load, "query_latency_ms", "p99"),), goal=20,
                         higher_is_better=False, original="~380"))
    table.append(Row(f"query, 32 clients, queries/s: {ALONE}", "client-ceiling", (("query", "queries_per_s"),),
                     goal=3000))
    table.append(Row(f"query, 32 clients, p99 ms: {ALONE}", "client-ceiling", (("query", "query_latency_ms", "p99"),),
                     goal=20, higher_is_better=False))
    table.append(Row("submits/s meanwhile (32 clients)", "query",
                     (("under_submit_load", "submit_load", "throughput_jobs_per_s"),)))
    for load, label in (("alone", "alone"), ("ended", "alone, ended jobs"),
                        ("under_submit_load", "under submit load")):
        table.append(Row(f"query (wrk), 32 connections {label}, requests/s", "wrk", (("query", load, "requests_per_s"),),
                         goal=3000, original="~240"))
        table.append(Row(f"query (wrk), 32 connections {label}, p99 ms", "wrk",
                         (("query", load, "latency_ms", "p99"),), goal=20, higher_is_better=False, original="~380"))
    table.append(Row("submits/s meanwhile (wrk, 32 connections)", "wrk",
                     (("query", "under_submit_load", "submit_load", "requests_per_s"),)))
    table.append(Row(f"projector rebuild of {sizes.rebuild_events:,} events, events/s", "rebuild", (("events_per_s",),)))
    table.append(Row(f"allocator, {sizes.allocator_pending[-1]:,} pending × {sizes.allocator_nodes[-1]:,} nodes: "
                     "decisions/s bulk / steady", "allocator",
                     (("largest", "decisions_per_s_bulk"), ("largest", "decisions_per_s_steady"))))
    for index, (along, sizes_along) in enumerate((("nodes", sizes.allocator_nodes),
                                                  ("pending jobs", sizes.allocator_pending))):
        table.append(Row(f"allocator: {along} ×{max(sizes_along) // min(sizes_along)} → cost per decision, "
                         "bulk × / steady ×", "allocator", (("growth", index, "bulk"), ("growth", index, "steady"))))
    for part in MEMORY_PARTS:
        table.append(Row(f"memory (PSS) of {part}, MB: at rest / after the drain / settled", "drain",
                         tuple(("memory_mb", stage, part) for stage in ("at_rest", "after_drain", "settled"))))
    for mode in ("default", "sync-always", "cluster"):
        table.append(Row(f"JetStream publishes/s, {mode}: acked one by one / pipelined", "durability",
                         ((mode, "acked_one_by_one_per_s"), (mode, "pipelined_per_s"))))
    table.append(Row("scheduler catch-up, s: from the start / from a snapshot", "recovery",
                     (("catch_up", "from_start_s"), ("catch_up", "from_snapshot_s"))))
    table.append(Row("scheduler fail-over after SIGKILL, s: p50 / max", "recovery",
                     (("failover", "kill_to_next_placement_s", "p50"), ("failover", "kill_to_next_placement_s", "max"))))
    table.append(Row("submit with tracing, jobs/s: off / on", "tracing",
                     (("submit_per_s_tracing_off",), ("submit_per_s_tracing_on",))))
    return table


def pick(data, path: tuple[str | int, ...]):
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def shown(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table_lines(sizes: Sizes, results: dict[str, dict]) -> list[str]:
    lines = ["| figure | ours | goal | ratio | Slurm 22.05 | original |", "|---|---|---|---|---|---|"]
    for row in rows(sizes):
        values = [pick(results.get(row.bench), path) for path in row.paths]
        if all(value is None for value in values):
            continue
        goal = ratio = ""
        if row.goal is not None:
            goal = f"{'≥' if row.higher_is_better else '≤'} {shown(row.goal)}"
            if isinstance(values[0], (int, float)) and values[0] > 0:
                ratio = f"{(values[0] / row.goal if row.higher_is_better else row.goal / values[0]):.2f}"
        ours = " / ".join(shown(value) for value in values)
        lines.append(f"| {row.label} | {ours} | {goal} | {ratio} | {row.slurm} | {row.original} |")
    for name, figures in results.items():
        if "error" in figures:  # its last line: the exception, or why it could not run
            lines.append(f"| {name} | {figures['error'].strip().splitlines()[-1]} |  |  |  |  |")
    return lines


# ----------------------------------------------------------------------------- running


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no")
                                                   else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run with small counts (about 2 minutes)")
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated, of: {', '.join(NAMES)}")
    args = parser.parse_args()
    selected = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := selected - set(NAMES):
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    revision = git_revision()
    started = time.monotonic()
    results: dict[str, dict] = {}
    lines: list[str] = []
    failed = False

    def record(name: str, measure: Callable[[], dict]) -> None:
        """Run one benchmark if selected; a failure is reported and the others still run."""
        nonlocal failed
        if name not in selected:
            return
        print(f"[{time.monotonic() - started:6.0f} s] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = measure()
        except Exception:
            failed = True
            results[name] = {"error": traceback.format_exc(limit=3)}
            print(results[name]["error"], file=sys.stderr, flush=True)
        mode = {"sync-always": "sync-always", "allocator": None, "durability": None,
                "client-ceiling": None}.get(name, "default")
        lines.append(json.dumps({"bench": name, **results[name], "durability": mode, "quick": args.quick,
                                 "git": revision, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                                ensure_ascii=False, default=str))

    if selected & set(ON_MAIN_STACK):
        try:
            main_stack(sizes, selected, record)
        except Exception:  # the stack itself: what ran is recorded, the rest is missing from the table
            failed = True
            traceback.print_exc()
    for name, measure in other_benchmarks(sizes).items():
        record(name, measure)

    minutes = (time.monotonic() - started) / 60
    print(f"\nSCNS-Conductor benchmarks{' (--quick)' if args.quick else ''}, git {revision}, {minutes:.1f} min; "
          "NATS durability: default (one server, fsync every 2 min) unless the figure says sync always; "
          "ratio ≥ 1 meets the goal\n")
    print("\n".join(table_lines(sizes, results)))
    print()
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
