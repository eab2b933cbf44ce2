#!/usr/bin/env python3
"""The cost of tracing: submit throughput (the shared load generator, 32 clients) on a stack
with tracing off, then on one exporting every span over OTLP/HTTP to a receiver in this process.
Prints both and their ratio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from harness import loadgen, running_stack  # noqa: E402

from shared.otlp_receiver import OtlpReceiver  # noqa: E402


def submit_rate(jobs: int, tracing_endpoint: str | None) -> float:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": tracing_endpoint} if tracing_endpoint else {}
    with running_stack(extra_env=env) as stack:
        return loadgen(stack, "submit", "--jobs", str(jobs), "--concurrency", "32")["throughput_jobs_per_s"]


def overhead(jobs: int) -> dict:
    off = submit_rate(jobs, None)
    with OtlpReceiver() as receiver:
        on = submit_rate(jobs, receiver.endpoint)
        spans = len(receiver.spans)
    return {"jobs": jobs, "submit_per_s_tracing_off": off, "submit_per_s_tracing_on": on,
            "ratio_on_to_off": round(on / off, 3) if off else None, "spans_received": spans}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    result = overhead(args.jobs)
    print(f"tracing overhead: submit {result['submit_per_s_tracing_off']} jobs/s off, "
          f"{result['submit_per_s_tracing_on']} jobs/s on (ratio {result['ratio_on_to_off']}), "
          f"{result['spans_received']} spans received")
    print(json.dumps({"bench": "tracing", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
