"""scns queue --watch's model (the listing, then events), the end of a job for --wait, the
event-stream parser and the API's error details (pure)."""

from scns_cli.client import ServerEvent, detail_text, parse_sse
from scns_cli.view import JobFilter, QueueView, end_of, exit_status, is_end, summary_of_query

SUBMITTED = {"type": "JobSubmitted", "spec": {"name": "a", "account": "acct", "partition": "default",
                                             "ntasks_per_node": 2, "cpus_per_task": 2},
             "submitted_at": "2026-11-28T10:00:00Z"}


def life(view, job_id=10):
    view.apply(job_id, "JobSubmitted", SUBMITTED)
    view.apply(job_id + 1, "JobAllocated", {"job_id": job_id, "node": "n1", "cpus": 4})
    view.apply(job_id + 2, "JobStarted", {"job_id": job_id, "node": "n1", "started_at": "2026-11-28T10:00:01Z"})


def test_events_move_a_job_through_the_queue():
    view = QueueView()
    view.apply(10, "JobSubmitted", SUBMITTED)
    assert [(j["job_id"], j["state"], j["allocated_cpus"]) for j in view.shown(JobFilter())] == [("10", "PENDING", 4)]
    life(view)
    assert view.shown(JobFilter())[0]["state"] == "RUNNING" and view.shown(JobFilter())[0]["node_list"] == "n1"
    view.apply(13, "JobFinished", {"job_id": 10, "state": "COMPLETED", "exit_code": "0:0",
                                   "ended_at": "2026-11-28T10:00:05Z"})
    assert view.shown(JobFilter()) == []
    assert view.shown(JobFilter(states=("COMPLETED",)))[0]["exit_code"] == "0:0"


def test_replaying_events_the_listing_already_has_ends_in_the_same_state():
    listed = QueueView()
    life(listed)
    replayed = QueueView()
    replayed.load([dict(job) for job in listed.shown(JobFilter())])
    life(replayed)  # the stream starts before the listing's position: the same events again
    assert replayed.shown(JobFilter()) == listed.shown(JobFilter())


def test_an_event_of_an_unknown_job_asks_for_it_and_node_events_are_ignored():
    view = QueueView()
    assert view.apply(20, "JobStarted", {"job_id": 7, "node": "n1"}) == 7
    assert view.apply(21, "JobCancelRequested", {"job_id": 7}) is None
    assert view.apply(22, "NodeRegistered", {"node": "n1"}) is None
    assert view.jobs == {}


def test_a_requeued_job_waits_again_and_the_ends_set_states():
    view = QueueView()
    life(view)
    view.apply(14, "JobRequeued", {"job_id": 10, "node": "n1"})
    assert view.jobs[10]["state"] == "PENDING" and view.jobs[10]["node_list"] == ""
    view.apply(15, "JobLost", {"job_id": 10})
    assert view.jobs[10]["state"] == "NODE_FAIL"
    view.apply(16, "JobCancelled", {"job_id": 10})
    assert view.jobs[10]["state"] == "CANCELLED"


def test_filters():
    job = {"job_id": "5", "state": "RUNNING", "account": "a", "partition": "p", "name": "n"}
    assert JobFilter().matches(job)
    assert not JobFilter(accounts=["b"]).matches(job)
    assert not JobFilter(partitions=["q"]).matches(job)
    assert not JobFilter(names=["m"]).matches(job)
    assert JobFilter(job_ids=["5"], states=()).matches(job) and not JobFilter(job_ids=["6"]).matches(job)


def test_the_end_and_exit_status_of_a_job():
    assert is_end("JobFinished") and is_end("JobCancelled") and is_end("JobLost") and not is_end("JobRequeued")
    assert end_of("JobFinished", {"state": "FAILED", "exit_code": "3:0"}) == ("FAILED", "3:0")
    assert end_of("JobCancelled", {}) == ("CANCELLED", "0:0")
    assert exit_status("FAILED", "3:0") == 3
    assert exit_status("COMPLETED", "0:0") == 0
    assert exit_status("CANCELLED", "0:15") == 143
    assert exit_status("CANCELLED", "0:0") == 1


def test_a_query_answer_as_a_summary():
    answer = {"job_id": "9", "state": "PENDING", "time": {"submit_time": "t", "start_time": None, "end_time": None},
              "detail": {"job_name": "x", "account": "a", "partition": "p", "allocated_cpus": 2, "node_list": "",
                         "exit_code": ":", "reason": "Priority"}}
    summary = summary_of_query(answer)
    assert summary["name"] == "x" and summary["reason"] == "Priority" and summary["job_id"] == "9"


def test_server_sent_events_are_parsed():
    stream = [b": a comment\n", b"id: 5\n", b"event: JobStarted\n", b'data: {"job_id": 3, "node": "n"}\n', b"\n",
              b"event: no-id\n", b"data: {}\n", b"\n", b"id: 6\r\n", b'data: {"type": "JobSubmitted",\n',
              b'data: "spec": {}}\n', b"\n"]
    events = list(parse_sse(stream))
    assert events == [ServerEvent(5, "JobStarted", {"job_id": 3, "node": "n"}),
                      ServerEvent(6, "JobSubmitted", {"type": "JobSubmitted", "spec": {}})]
    assert events[0].job_id == 3 and events[1].job_id == 6


def test_error_details_are_one_line():
    assert detail_text({"detail": "作业 9 未找到"}) == "作业 9 未找到"
    assert detail_text({"detail": [{"loc": ["body", "job", "time_limit"], "msg": "Value error, bad"},
                                   {"loc": ["body"], "msg": "Field required"}]}) == "time_limit: bad; Field required"
    assert "\n" not in detail_text({"detail": "two\nlines"})
