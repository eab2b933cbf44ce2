#!/usr/bin/env python3
"""`./just bench`: start the stack on free ports, run the load generator against it, print numbers.

Measures (each printed as a table row and as the load generator's JSON line):
  latency  submit -> RUNNING and submit -> finished on an idle system
  submit   submit throughput at a given concurrency
  drain    N trivial jobs submitted at once until all are terminal (completed jobs/s)
  rebuild  the projector replaying 100,000 events into a fresh read model (events/s)
  durability  JetStream publish rates: one server (default sync, sync always), 3 servers with R3
  recovery  scheduler catch-up from a snapshot vs from the start; fail-over after a SIGKILL
  tracing   submit throughput with tracing off and on (spans exported to an in-process receiver)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from shared.embedded import free_port  # noqa: E402
from shared.stack import Stack, StackConfig  # noqa: E402


def loadgen(stack: Stack, mode: str, *args: str) -> dict:
    cwd = stack.config.work_dir / "bench"
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(HERE / "loadgen.py"), "--base-url", stack.config.api_url, "--token", stack.token,
               "--cwd", str(cwd), "--mode", mode, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode not in (0, 1) or not lines:
        raise RuntimeError(f"loadgen {mode} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return json.loads(lines[-1])


def pick(data: dict, *path: str):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run with small counts")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the executor node declares")
    args = parser.parse_args()
    samples, submits, drains = (5, 200, 100) if args.quick else (30, 2000, 500)
    rebuild_events, durability_events = (10_000, 1000) if args.quick else (100_000, 5000)

    home = Path(tempfile.mkdtemp(prefix="scns-bench-"))
    home.chmod(0o755)
    config = StackConfig(home=home, nats_port=free_port(), pg_port=free_port(), api_port=free_port(),
                         total_cpus=args.cpus, kill_grace_seconds=2.0)
    stack = Stack(config)
    results = {}
    try:
        stack.start()
        results["latency"] = loadgen(stack, "latency", "--samples", str(samples), "--gap", "0.2", "--gap-jitter", "0")
        results["submit"] = loadgen(stack, "submit", "--jobs", str(submits), "--concurrency", "32")
        results["drain"] = loadgen(stack, "drain", "--jobs", str(drains), "--concurrency", "32")
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)

    latency = pick(results["latency"], "results", "latency") or {}
    submit = pick(results["submit"], "results", "submit") or {}
    drain = pick(results["drain"], "results", "drain") or {}
    rows = [
        ("submit -> start (server), p50 / p99 ms",
         f"{pick(latency, 'server_submit_to_start_ms', 'p50')} / {pick(latency, 'server_submit_to_start_ms', 'p99')}"),
        ("submit -> finished (client), p50 / p99 ms",
         f"{pick(latency, 'client_submit_to_terminal_ms', 'p50')} / {pick(latency, 'client_submit_to_terminal_ms', 'p99')}"),
        (f"submit throughput, {submits} jobs, 32 clients, jobs/s", submit.get("throughput_jobs_per_s")),
        ("submit latency at 32 clients, p50 / p99 ms",
         f"{pick(submit, 'submit_latency_ms', 'p50')} / {pick(submit, 'submit_latency_ms', 'p99')}"),
        (f"drain of {drains} trivial jobs, completed jobs/s", drain.get("completed_per_s")),
        ("drain: lost / wrong state / wrong stdout",
         f"{drain.get('lost_never_terminal')} / {drain.get('wrong_terminal_state')} / {drain.get('bad_stdout')}"),
    ]
    print(f"\nSCNS-Conductor on this machine, executor declaring {args.cpus} CPUs{' (quick)' if args.quick else ''}")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print()
    for data in results.values():
        print(json.dumps(data, ensure_ascii=False))
    extras = (("rebuild.py", "--events", str(rebuild_events)),
              ("durability.py", "--events", str(durability_events)),
              ("recovery.py", "--events", str(rebuild_events), "--rounds", "2" if args.quick else "5"),
              ("tracing.py", "--jobs", str(submits)))
    for script, *options in extras:
        extra = subprocess.run([sys.executable, str(HERE / script), *options],
                               capture_output=True, text=True, timeout=1800)
        print(extra.stdout.strip() or extra.stderr.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
