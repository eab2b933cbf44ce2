"""The cluster's metrics in the Prometheus text exposition format (pure).

Taken from the read model and the log at scrape time, so every gateway answers the same and
nothing is lost across restarts: totals are counts of jobs, so they only ever grow.
"""

from __future__ import annotations

from dataclasses import dataclass

# Seconds: from "placed at once" to "waited an hour".
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0)


@dataclass(frozen=True)
class Histogram:
    cumulative: tuple[int, ...]  # observations <= each bucket of BUCKETS
    count: int
    total: float


@dataclass(frozen=True)
class Snapshot:
    queue_depth: dict[str, int]  # partition -> pending jobs
    running: int
    node_cpus: dict[str, tuple[int, int]]  # node -> (allocated, total)
    submitted: int
    finished: dict[str, int]  # terminal state -> jobs
    wait: Histogram
    run: Histogram
    projection_lag: int | None  # events the read model is behind the log (None: log unreachable)
    redeliveries: int | None  # messages JetStream delivered again to executors


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(snapshot: Snapshot) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_label(text)}"' for key, text in labels.items())
            lines.append(f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}")

    def histogram(name: str, help_text: str, data: Histogram) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} histogram")
        for bound, count in zip(BUCKETS, data.cumulative):
            lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {data.count}')
        lines.append(f"{name}_sum {_number(float(data.total))}")
        lines.append(f"{name}_count {data.count}")

    family("scns_queue_depth", "gauge", "Jobs waiting to be placed, per partition.",
           [({"partition": partition}, depth) for partition, depth in sorted(snapshot.queue_depth.items())])
    family("scns_jobs_running", "gauge", "Jobs running now.", [({}, snapshot.running)])
    family("scns_node_cpus_allocated", "gauge", "CPUs allocated on each node.",
           [({"node": node}, allocated) for node, (allocated, _) in sorted(snapshot.node_cpus.items())])
    family("scns_node_cpus", "gauge", "CPUs each node declares.",
           [({"node": node}, total) for node, (_, total) in sorted(snapshot.node_cpus.items())])
    family("scns_jobs_submitted_total", "counter", "Jobs submitted.", [({}, snapshot.submitted)])
    family("scns_jobs_finished_total", "counter", "Jobs ended, per terminal state.",
           [({"state": state}, count) for state, count in sorted(snapshot.finished.items())])
    histogram("scns_job_wait_seconds", "From submission to start, of the jobs that started.", snapshot.wait)
    histogram("scns_job_run_seconds", "From start to end, of the jobs that ran and ended.", snapshot.run)
    if snapshot.projection_lag is not None:
        family("scns_projection_lag_events", "gauge", "Events the read model is behind the log.",
               [({}, snapshot.projection_lag)])
    if snapshot.redeliveries is not None:
        family("scns_consumer_redeliveries", "gauge", "Messages JetStream is delivering again to executors.",
               [({}, snapshot.redeliveries)])
    return "\n".join(lines) + "\n"
