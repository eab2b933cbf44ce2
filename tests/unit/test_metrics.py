"""The metrics page is valid Prometheus text, as Prometheus' own parser reads it."""

from prometheus_client.parser import text_string_to_metric_families

from services.gateway.core.metrics import BUCKETS, Histogram, Snapshot, render


def test_a_snapshot_renders_as_prometheus_text_with_every_family():
    wait = Histogram(cumulative=tuple(range(1, len(BUCKETS) + 1)), count=12, total=3.5)
    snapshot = Snapshot(queue_depth={"default": 3, 'odd "name"\\': 1}, running=2, node_cpus={"n1": (1, 2)},
                        submitted=20, finished={"COMPLETED": 15, "FAILED": 1}, wait=wait, run=wait,
                        projection_lag=0, redeliveries=None)
    families = {family.name: family for family in text_string_to_metric_families(render(snapshot))}
    assert families["scns_queue_depth"].type == "gauge"
    assert {s.labels["partition"]: s.value for s in families["scns_queue_depth"].samples} == {
        "default": 3, 'odd "name"\\': 1}
    assert families["scns_jobs_submitted"].type == "counter"  # the parser names a counter without _total
    assert [(s.name, s.value) for s in families["scns_jobs_submitted"].samples] == [("scns_jobs_submitted_total", 20)]
    buckets = [s for s in families["scns_job_wait_seconds"].samples if s.name.endswith("_bucket")]
    assert [s.value for s in buckets] == [*range(1, len(BUCKETS) + 1), 12] and buckets[-1].labels["le"] == "+Inf"
    assert "scns_consumer_redeliveries" not in families and families["scns_projection_lag_events"].samples[0].value == 0
