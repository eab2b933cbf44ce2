from datetime import datetime, timezone

import msgspec
import pytest

from shared.events import (
    SUBJECTS,
    JobAllocated,
    JobFinished,
    JobSpec,
    JobSubmitted,
    NodeRegistered,
    decode,
    encode,
    subject_of,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SPEC = JobSpec(account="a", name="n", partition="p", cwd="/w", stdout="o", stderr="e", script="echo", time_limit_s=60)


def test_every_event_type_has_a_subject_and_round_trips():
    samples = [
        JobSubmitted(spec=SPEC, submitted_at=NOW),
        JobAllocated(job_id=7, node="n1", cpus=2, memory_mb=10, allocated_at=NOW),
        JobFinished(job_id=7, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW),
        NodeRegistered(node="n1", cpus=2, memory_mb=10, partitions=["p"], arch="aarch64", registered_at=NOW),
    ]
    for event in samples:
        assert decode(encode(event)) == event
    assert set(SUBJECTS) >= {type(event) for event in samples}


def test_subjects_carry_job_id_and_node():
    assert subject_of(JobAllocated(job_id=7, node="n1", cpus=1, memory_mb=1, allocated_at=NOW)) == "scns.job.7.allocated.n1"
    assert subject_of(JobSubmitted(spec=SPEC, submitted_at=NOW)) == "scns.submit"


def test_an_old_event_without_newer_fields_still_decodes():
    # A v1 JobFinished as an old producer wrote it: no error_msg, no started_at, no usage (v2).
    old = (b'{"type":"JobFinished","v":1,"job_id":3,"node":"n","state":"FAILED","exit_code":"3:0",'
           b'"ended_at":"2026-01-02T03:04:05Z"}')
    event = decode(old)
    assert isinstance(event, JobFinished) and event.v == 1 and event.error_msg is None
    assert (event.peak_memory_kb, event.cpu_seconds) == (None, None)


def test_foreign_data_is_rejected_not_misread():
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"type":"SomethingElse"}')
    with pytest.raises(msgspec.DecodeError):
        decode(b"not json")
