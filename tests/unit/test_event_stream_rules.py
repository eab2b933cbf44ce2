"""Who sees what on GET /events, and where a resumed stream starts."""

from datetime import datetime, timezone

import pytest

from services.gateway.core.stream import job_of, start_after, visible
from shared.events import JobFinished, JobSpec, JobSubmitted, NodeDown, SchedulerElected

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SUBMITTED = JobSubmitted(spec=JobSpec(account="a", name="j", partition="p", cwd="/w", stdout="o", stderr="e",
                                      script="true", time_limit_s=0), submitted_at=NOW)
FINISHED = JobFinished(job_id=7, node="n", state="COMPLETED", exit_code="0:0", ended_at=NOW)


def test_a_user_sees_its_accounts_jobs_and_the_nodes_an_admin_everything():
    assert job_of(SUBMITTED, 7) == 7 and job_of(FINISHED, 99) == 7
    assert visible(FINISHED, "a", "a") and not visible(FINISHED, "a", "b") and not visible(FINISHED, "a", None)
    assert visible(NodeDown(node="n", reason="x", down_at=NOW), "a", None)
    elected = SchedulerElected(scheduler="s", elected_at=NOW)
    assert not visible(elected, "a", None) and visible(elected, None, None) and visible(FINISHED, None, None)


def test_a_stream_resumes_after_the_last_event_id_or_starts_now():
    assert start_after(None) is None and start_after("0") == 0 and start_after("1234") == 1234
    for bad in ("-1", "12a", "", "9" * 20):
        with pytest.raises(ValueError):
            start_after(bad)
