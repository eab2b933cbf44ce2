#!/usr/bin/env python3
"""The cost of tracing: submit throughput (the shared load generator, 32 clients) on a stack
with tracing off, then on one exporting every span over OTLP/HTTP to a receiver in this process.
Prints both and their ratio."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from run import loadgen, pick  # noqa: E402

from shared.embedded import free_port  # noqa: E402
from shared.otlp_receiver import OtlpReceiver  # noqa: E402
from shared.stack import Stack, StackConfig  # noqa: E402


def submit_rate(jobs: int, tracing_endpoint: str | None) -> float:
    home = Path(tempfile.mkdtemp(prefix="scns-bench-tracing-"))
    home.chmod(0o755)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": tracing_endpoint} if tracing_endpoint else {}
    stack = Stack(StackConfig(home=home, nats_port=free_port(), pg_port=free_port(), api_port=free_port(),
                              total_cpus=2, kill_grace_seconds=2.0, extra_env=env))
    try:
        stack.start()
        result = loadgen(stack, "submit", "--jobs", str(jobs), "--concurrency", "32")
        return pick(result, "results", "submit", "throughput_jobs_per_s")
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    off = submit_rate(args.jobs, None)
    with OtlpReceiver() as receiver:
        on = submit_rate(args.jobs, receiver.endpoint)
        spans = len(receiver.spans)
    result = {"bench": "tracing-overhead", "jobs": args.jobs, "submit_per_s_tracing_off": off,
              "submit_per_s_tracing_on": on, "ratio_on_to_off": round(on / off, 3) if off else None,
              "spans_received": spans}
    print(f"tracing overhead: submit {off} jobs/s off, {on} jobs/s on (ratio {result['ratio_on_to_off']}), "
          f"{spans} spans received")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
