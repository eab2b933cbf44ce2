"""The gateway's ceilings, measured by wrk (a C load generator, so the client takes little of the
machine's CPU, unlike the Python one): submits (bench/submit.lua) for a few seconds at each
connection count; queries (bench/query.lua) at 32 connections, alone and while 32 more submit, and
of ended jobs alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import job_folder
from http_api import wait_for_projector

from shared.stack import Stack

HERE = Path(__file__).resolve().parent
NOT_INSTALLED = "wrk not installed (apt install wrk)"
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
QUERY_CONNECTIONS = 32


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return round(float(number) * UNITS_MS[unit], 2)


def figures(process: subprocess.Popen, seconds: int) -> dict:
    stdout, stderr = process.communicate(timeout=seconds + 60)
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr[-2000:]}")
    percentiles = {f"p{p}": milliseconds(value)
                   for p, value in re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)$", stdout, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
    errors = re.search(r"Socket errors: (.*)$", stdout, re.M)
    return {"connections": int(re.search(r"(\d+) connections", stdout).group(1)),
            "requests": int(re.search(r"(\d+) requests in", stdout).group(1)),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", stdout).group(1)),
            "latency_ms": percentiles,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": errors.group(1) if errors else None}


def ceilings(stack: Stack, seconds: int, connections: tuple[int, ...], query_ids: list[str],
             ended_ids: list[str]) -> dict:
    binary = shutil.which("wrk")
    if binary is None:
        return {"error": NOT_INSTALLED}
    env = {**os.environ, "BENCH_TOKEN": stack.token, "BENCH_JOB_CWD": str(job_folder(stack))}

    def start(script: str, path: str, count: int, ids: list[str] = query_ids) -> subprocess.Popen:
        command = [binary, "--threads", str(min(2, count)), "--connections", str(count), "--duration", f"{seconds}s",
                   "--timeout", "10s", "--latency", "--script", str(HERE / script), f"{stack.config.api_url}{path}"]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**env, "BENCH_JOB_IDS": ",".join(ids)})

    # Before each phase, the read model catches up with the submits of the one before.
    caught_up_after_s = []
    submit = {}
    for count in connections:
        caught_up_after_s.append(wait_for_projector(stack))
        submit[f"c{count}"] = figures(start("submit.lua", "/jobs/submit", count), seconds)
    caught_up_after_s.append(wait_for_projector(stack))
    alone = figures(start("query.lua", "/", QUERY_CONNECTIONS), seconds)
    ended = figures(start("query.lua", "/", QUERY_CONNECTIONS, ended_ids), seconds)
    caught_up_after_s.append(wait_for_projector(stack))
    submitting = start("submit.lua", "/jobs/submit", QUERY_CONNECTIONS)
    under_load = figures(start("query.lua", "/", QUERY_CONNECTIONS), seconds)
    return {"submit": submit,
            "query": {"alone": alone, "ended": ended,
                      "under_submit_load": {**under_load, "submit_load": figures(submitting, seconds)}},
            "projector_catch_up_s": caught_up_after_s}
