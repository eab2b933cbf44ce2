"""The shared load generator's own ceiling on this machine: its submit, query and drain runs, as
the other benchmarks make them, against bench/null_server.py, which does no work. A figure of ours
measured through the load generator can come near these, never above them: a goal above them
cannot be shown through that client here, however fast the server. (`client_cpu_s` against
`client_elapsed_s` says how much of its one core the client used.)"""

from __future__ import annotations

import psutil
from harness import client_process, loadgen_result
from http_api import drain_options, query_options, submit_options
from null_server import null_server

QUERIED_IDS = "1-1000"  # as many as the query benchmark takes (the newest 1,000 jobs)


def measure(submit_jobs: dict[int, int], query_seconds: float, drain_jobs: tuple[int, ...]) -> dict:
    with null_server() as (base_url, server):
        def run(mode: str, *options: str) -> dict:
            return loadgen_result(client_process(base_url, mode, *options))

        figures = {
            "submit": {f"c{clients}": run("submit", *submit_options(jobs, clients))
                       for clients, jobs in submit_jobs.items()},
            "query": run("query", *query_options(QUERIED_IDS, query_seconds)),
            "drain": {str(jobs): run("drain", *drain_options(jobs)) for jobs in drain_jobs},
        }
        times = psutil.Process(server.pid).cpu_times()
    return {**figures, "server_cpu_s": round(times.user + times.system, 2)}
