"""The gateway's submit ceiling, measured by wrk (a C load generator, so the client costs little):
POST /jobs/submit (bench/submit.lua) for a few seconds at each connection count."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import job_folder

from shared.stack import Stack

SCRIPT = Path(__file__).resolve().parent / "submit.lua"
NOT_INSTALLED = "wrk not installed (apt install wrk)"
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return round(float(number) * UNITS_MS[unit], 2)


def parse(output: str) -> dict:
    percentiles = {f"p{p}": milliseconds(value)
                   for p, value in re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)$", output, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)$", output, re.M)
    return {"requests": int(re.search(r"(\d+) requests in", output).group(1)),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "latency_ms": percentiles,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": errors.group(1) if errors else None}


def submit_ceiling(stack: Stack, seconds: int, connections: tuple[int, ...]) -> dict:
    binary = shutil.which("wrk")
    if binary is None:
        return {"error": NOT_INSTALLED}
    env = {**os.environ, "BENCH_TOKEN": stack.token, "BENCH_JOB_CWD": str(job_folder(stack))}
    results = {}
    for count in connections:
        command = [binary, "--threads", str(min(2, count)), "--connections", str(count), "--duration", f"{seconds}s",
                   "--timeout", "10s", "--latency", "--script", str(SCRIPT), f"{stack.config.api_url}/jobs/submit"]
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
        if run.returncode != 0:
            raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr[-2000:]}")
        results[f"c{count}"] = parse(run.stdout)
    return results
