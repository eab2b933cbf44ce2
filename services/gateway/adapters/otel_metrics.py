"""The /metrics figures as OpenTelemetry metrics too (observable instruments, exported by the
SDK's periodic reader when OTEL_* configures it). The wait and run histograms stay Prometheus-only:
OpenTelemetry has no observable histogram."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.gateway.core.metrics import Snapshot


def observe(latest: Callable[[], Snapshot | None]) -> None:
    meter = metrics.get_meter("scns-conductor")

    def reading(figures: Callable[[Snapshot], Iterable[Observation]]):
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            snapshot = latest()
            return figures(snapshot) if snapshot is not None else []
        return [callback]

    meter.create_observable_gauge("scns.queue_depth", reading(lambda s: [
        Observation(depth, {"partition": partition}) for partition, depth in s.queue_depth.items()]),
        description="Jobs waiting to be placed, per partition")
    meter.create_observable_gauge("scns.jobs.running", reading(lambda s: [Observation(s.running)]),
                                  description="Jobs running now")
    meter.create_observable_gauge("scns.node.cpus_allocated", reading(lambda s: [
        Observation(allocated, {"node": node}) for node, (allocated, _) in s.node_cpus.items()]),
        description="CPUs allocated on each node")
    meter.create_observable_counter("scns.jobs.submitted", reading(lambda s: [Observation(s.submitted)]),
                                    description="Jobs submitted")
    meter.create_observable_counter("scns.jobs.finished", reading(lambda s: [
        Observation(count, {"state": state}) for state, count in s.finished.items()]),
        description="Jobs ended, per terminal state")
    meter.create_observable_gauge("scns.projection.lag", reading(lambda s: [
        Observation(s.projection_lag)] if s.projection_lag is not None else []),
        description="Events the read model is behind the log")
    meter.create_observable_gauge("scns.consumer.redeliveries", reading(lambda s: [
        Observation(s.redeliveries)] if s.redeliveries is not None else []),
        description="Messages JetStream is delivering again to executors")
