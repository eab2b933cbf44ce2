"""Who submitted and who asked for a cancel travel in the events; older events still decode."""

from datetime import datetime, timezone

from shared.events import Actor, JobCancelRequested, JobSpec, JobSubmitted, decode, encode

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SPEC = JobSpec(account="a", name="n", partition="p", cwd="/w", stdout="o", stderr="e", script="echo", time_limit_s=60)
ALICE = Actor(token="alice", account="a", role="user", token_id="0123456789ab")


def test_the_actor_round_trips_and_bumps_the_versions():
    submitted = JobSubmitted(spec=SPEC, submitted_at=NOW, submitted_by=ALICE)
    cancel = JobCancelRequested(job_id=7, requested_at=NOW, requested_by=ALICE)
    assert decode(encode(submitted)) == submitted and submitted.v == 3
    assert decode(encode(cancel)) == cancel and cancel.v == 2


def test_events_written_before_the_audit_fields_still_decode():
    old_cancel = b'{"type":"JobCancelRequested","v":1,"job_id":7,"requested_at":"2026-01-02T03:04:05Z"}'
    event = decode(old_cancel)
    assert isinstance(event, JobCancelRequested) and event.requested_by is None and event.v == 1
    old_submit = encode(JobSubmitted(spec=SPEC, submitted_at=NOW)).replace(b',"submitted_by":null', b"")
    assert b"submitted_by" not in old_submit
    assert decode(old_submit).submitted_by is None


def test_an_actor_recorded_before_token_ids_still_decodes():
    before = encode(JobCancelRequested(job_id=7, requested_at=NOW, requested_by=ALICE)).replace(
        b',"token_id":"0123456789ab"', b"")
    assert b"token_id" not in before
    assert decode(before).requested_by == Actor(token="alice", account="a", role="user", token_id=None)
