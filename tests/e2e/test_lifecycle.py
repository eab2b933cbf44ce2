"""The job life cycle over HTTP, against the whole stack started as `up` starts it."""

from __future__ import annotations

import os
import signal

import pytest

from shared.events import JobAllocated, JobCancelled, JobFinished, JobLost, JobRequeued, JobStarted

from ..conftest import eventually
from ..integration.helpers import all_events, processes_with
from .helpers import TERMINAL, job, submit, until_state

pytestmark = pytest.mark.e2e

async def test_the_original_readme_example_completes_with_its_output(api, stack):
    job_id = await submit(api, job(stack, '#!/bin/bash\necho "Hello World"\nsleep 1\necho "Done"\n', time_limit="30"))
    body = await until_state(api, job_id, TERMINAL)
    assert body["state"] == "COMPLETED" and body["detail"]["exit_code"] == "0:0" and body["error_msg"] is None
    assert body["job_log"] == {"stdout": "Hello World\nDone\n", "stderr": ""}
    assert body["detail"]["node_list"] == stack.config.node_name and body["detail"]["allocated_cpus"] == 1
    assert body["time"]["limit_time"] == "30:00" and body["time"]["end_time"].endswith("Z")


async def test_exit_3_is_failed_with_its_code(api, stack):
    job_id = await submit(api, job(stack, "echo oops >&2\nexit 3\n"))
    body = await until_state(api, job_id, TERMINAL)
    assert (body["state"], body["detail"]["exit_code"], body["error_msg"]) == ("FAILED", "3:0", "Exited with code 3")
    assert body["job_log"]["stderr"] == "oops\n"


async def test_a_job_over_its_time_limit_is_timeout(api, stack):
    job_id = await submit(api, job(stack, "sleep 3031\n", time_limit="0:0:1"))
    body = await until_state(api, job_id, TERMINAL)
    assert body["state"] == "TIMEOUT" and body["detail"]["exit_code"] == "0:15"
    assert body["error_msg"] == "Time limit of 0:01 reached"
    assert not processes_with("3031")


async def test_cancel_while_pending_never_runs(api, stack, log):
    blocker = await submit(api, job(stack, "sleep 3032\n", cpus=2))
    await until_state(api, blocker, {"RUNNING"})
    waiting = await submit(api, job(stack, "touch should-not-exist\n"))
    pending = (await api.get(f"/jobs/query/{waiting}")).json()
    assert pending["state"] == "PENDING" and pending["detail"]["reason"] in {"Resources", "Priority"}
    assert (await api.post(f"/jobs/cancel/{waiting}")).json() == {"msg": "取消成功"}
    body = await until_state(api, waiting, TERMINAL)
    assert (body["state"], body["detail"]["exit_code"], body["time"]["start_time"]) == ("CANCELLED", "0:0", None)
    assert (await api.post(f"/jobs/cancel/{blocker}")).status_code == 200
    await until_state(api, blocker, TERMINAL)
    events = [e for _, e in await all_events(log) if getattr(e, "job_id", None) == int(waiting)]
    assert not any(isinstance(e, (JobAllocated, JobStarted)) for e in events)


async def test_cancel_while_running_kills_the_tree_and_stays_cancelled(api, stack, log):
    job_id = await submit(api, job(stack, "sleep 3033 &\nsleep 3034\n"))
    await until_state(api, job_id, {"RUNNING"})
    await eventually(lambda: len(processes_with("3033")) + len(processes_with("3034")) == 2,
                     what="the job's processes")
    assert (await api.post(f"/jobs/cancel/{job_id}")).status_code == 200
    body = await until_state(api, job_id, TERMINAL)
    assert body["state"] == "CANCELLED" and body["detail"]["exit_code"] == "0:15"
    assert not processes_with("3033") and not processes_with("3034")
    # Cancelling again is a success that changes nothing; the log holds exactly one end.
    assert (await api.post(f"/jobs/cancel/{job_id}")).json() == {"msg": "取消成功"}
    ends = [e for _, e in await all_events(log) if isinstance(e, JobFinished) and e.job_id == int(job_id)]
    assert [e.state for e in ends] == ["CANCELLED"]


async def test_idempotency_key_returns_the_same_job(api, stack):
    body = job(stack, "true\n")
    first = await submit(api, body, **{"Idempotency-Key": "retry-me"})
    second = await submit(api, body, **{"Idempotency-Key": "retry-me"})
    third = await submit(api, body)
    assert first == second != third and int(third) > int(first)


async def test_unknown_job_is_404_and_bad_input_is_422(api, stack):
    response = await api.get("/jobs/query/999999999")
    assert response.status_code == 404 and response.json() == {"detail": "作业 999999999 未找到"}
    assert (await api.post("/jobs/cancel/999999999")).status_code == 404
    response = await api.post("/jobs/submit", content=b"{not json")
    assert response.status_code == 422 and response.headers["x-request-id"]
    unauthenticated = await api.get("/jobs/query/1", headers={"Authorization": "Bearer wrong"})
    assert unauthenticated.status_code == 401


async def test_200_one_cpu_jobs_on_a_2_cpu_node_never_run_more_than_2_at_once(api, stack, log):
    ids = [await submit(api, job(stack, "true\n", name=f"many-{i}")) for i in range(200)]
    for job_id in ids:
        body = await until_state(api, job_id, TERMINAL, timeout=180)
        assert body["state"] == "COMPLETED", body
    holding, running, most_holding, most_running = 0, 0, 0, 0
    for _, event in await all_events(log):
        if isinstance(event, JobAllocated):
            holding += 1
        elif isinstance(event, JobStarted):
            running += 1
        elif isinstance(event, JobFinished):
            holding -= 1
            running -= event.started_at is not None
        most_holding, most_running = max(most_holding, holding), max(most_running, running)
    assert most_running <= 2 and most_holding <= 2
    assert most_running == 2  # and the node was used fully


async def test_every_service_restarts_without_losing_a_job(api, stack):
    done = await submit(api, job(stack, "echo kept\n"))
    await until_state(api, done, TERMINAL)
    for service in ("scheduler", "projector", "executor", "gateway"):
        stack.restart(service)
    body = await until_state(api, done, TERMINAL)
    assert body["state"] == "COMPLETED" and body["job_log"]["stdout"] == "kept\n"
    fresh = await submit(api, job(stack, "echo after\n"))
    body = await until_state(api, fresh, TERMINAL)
    assert body["state"] == "COMPLETED" and body["job_log"]["stdout"] == "after\n"


async def test_restarts_of_every_part_with_jobs_in_flight_lose_nothing(api, stack, log):
    """Scheduler, projector, gateway, NATS and PostgreSQL restarted one after another while jobs
    are queued and running: every job completes, and the log holds exactly one end for each."""
    ids = [await submit(api, job(stack, "sleep 0.5\necho done\n", name=f"in-flight-{i}")) for i in range(8)]
    await until_state(api, ids[0], {"RUNNING", *TERMINAL})
    for part in ("scheduler", "projector", "gateway", "nats", "postgres"):
        stack.restart(part)
    for job_id in ids:
        body = await until_state(api, job_id, TERMINAL, timeout=120)
        assert (body["state"], body["job_log"]["stdout"]) == ("COMPLETED", "done\n"), body
    ends = [e.job_id for _, e in await all_events(log) if isinstance(e, (JobFinished, JobCancelled))]
    assert sorted(j for j in ends if str(j) in ids) == sorted(int(j) for j in ids)


async def test_a_node_that_stops_answering_fails_its_jobs_once_and_kills_them_when_back(api, stack, log):
    job_id = await submit(api, job(stack, "sleep 3061\n", time_limit="5"))
    await until_state(api, job_id, {"RUNNING"})
    os.kill(stack.services["executor"].pid, signal.SIGKILL)  # the node goes silent; its job runs on
    body = await until_state(api, job_id, TERMINAL)
    assert (body["state"], body["detail"]["exit_code"]) == ("NODE_FAIL", "0:9")
    assert "stopped answering" in body["error_msg"]
    (node,) = (await api.get("/nodes")).json()["nodes"]
    assert node["state"] == "DOWN" and node["allocated_cpus"] == 0
    stack.restart("executor")  # the node comes back: the job declared failed is killed, not reported
    await eventually(lambda: not processes_with("3061"), what="the orphaned job to be killed")
    ends = [e for _, e in await all_events(log) if getattr(e, "job_id", None) == int(job_id)
            and isinstance(e, (JobFinished, JobLost, JobCancelled))]
    assert [type(e).__name__ for e in ends] == ["JobLost"]
    after = await submit(api, job(stack, "echo back\n"))
    assert (await until_state(api, after, TERMINAL))["job_log"]["stdout"] == "back\n"


async def test_a_job_submitted_with_requeue_runs_again_when_its_node_comes_back(api, stack, log):
    marker = stack.config.work_dir / "e2e" / "requeue-first-run"
    script = f"echo run >> requeue-runs.txt\nif [ -e {marker} ]; then exit 0; fi\ntouch {marker}\nsleep 3062\n"
    job_id = await submit(api, job(stack, script, time_limit="5", requeue=True))
    await until_state(api, job_id, {"RUNNING"})
    os.kill(stack.services["executor"].pid, signal.SIGKILL)  # the node goes silent; its job runs on

    async def requeued():
        body = (await api.get(f"/jobs/query/{job_id}")).json()
        return body["state"] == "PENDING" and body["detail"]["restarts"] == 1 and body

    body = await eventually(requeued, what="the job to be queued again")
    assert body["detail"]["requeue"] is True and body["detail"]["node_list"] == ""
    (node,) = (await api.get("/nodes")).json()["nodes"]
    assert node["state"] == "DOWN" and node["allocated_cpus"] == 0
    stack.restart("executor")  # the node comes back: the lost run is killed, the job runs again
    body = await until_state(api, job_id, TERMINAL)
    assert (body["state"], body["detail"]["restarts"]) == ("COMPLETED", 1) and not processes_with("3062")
    assert (marker.parent / "requeue-runs.txt").read_text() == "run\nrun\n"
    ends = [e for _, e in await all_events(log) if getattr(e, "job_id", None) == int(job_id)
            and isinstance(e, (JobFinished, JobLost, JobCancelled, JobRequeued))]
    assert [type(e).__name__ for e in ends] == ["JobRequeued", "JobFinished"]


async def test_a_job_with_requeue_cancelled_while_its_node_is_silent_is_cancelled_not_run_again(api, stack, log):
    runs = stack.config.work_dir / "e2e" / "cancelled-requeue-runs.txt"
    job_id = await submit(api, job(stack, f"echo run >> {runs.name}\nsleep 3063\n", time_limit="5", requeue=True))
    await until_state(api, job_id, {"RUNNING"})
    os.kill(stack.services["executor"].pid, signal.SIGKILL)  # the node goes silent; its job runs on
    # Cancelled while still placed: no executor is there to carry it out.
    assert (await api.post(f"/jobs/cancel/{job_id}")).status_code == 200
    body = await until_state(api, job_id, TERMINAL)
    assert (body["state"], body["detail"]["restarts"]) == ("CANCELLED", 1)  # requeued with its node, then cancelled
    stack.restart("executor")  # the node comes back: the cancelled run is killed, nothing runs again
    await eventually(lambda: not processes_with("3063"), what="the cancelled run to be killed")
    after = await submit(api, job(stack, "echo back\n"))
    assert (await until_state(api, after, TERMINAL))["job_log"]["stdout"] == "back\n"
    assert runs.read_text() == "run\n"
    ends = [e for _, e in await all_events(log) if getattr(e, "job_id", None) == int(job_id)
            and isinstance(e, (JobFinished, JobLost, JobCancelled, JobRequeued))]
    assert [type(e).__name__ for e in ends] == ["JobRequeued", "JobCancelled"]


async def test_logs_of_an_unreachable_node_are_empty_and_say_so(api, stack):
    job_id = await submit(api, job(stack, "echo visible\n"))
    assert (await until_state(api, job_id, TERMINAL))["job_log"]["stdout"] == "visible\n"
    stack.stop_service("executor")
    try:
        async def unavailable():  # (the gateway shows an ended job's output it read within 5 s)
            response = await api.get(f"/jobs/query/{job_id}")
            return response if "x-log-unavailable" in response.headers else None

        response = await eventually(unavailable, what="the log said to be unavailable")
        assert response.status_code == 200 and response.json()["state"] == "COMPLETED"
        assert response.json()["job_log"] == {"stdout": "", "stderr": ""}
        assert response.headers["x-log-unavailable"] == stack.config.node_name
    finally:
        stack.start_service("executor")

    async def readable_again():
        return (await api.get(f"/jobs/query/{job_id}")).json()["job_log"]["stdout"] == "visible\n"

    await eventually(readable_again, what="the restarted executor serving the log")


async def test_the_whole_stack_run_again_finds_every_earlier_job(api, stack):
    """What `./just up` does after a Ctrl-C: same folder, same ports; the jobs are all still there."""
    job_id = await submit(api, job(stack, "echo before the restart\n"))
    await until_state(api, job_id, TERMINAL)
    blocker = await submit(api, job(stack, "sleep 3035\n", cpus=2, time_limit="60"))
    await until_state(api, blocker, {"RUNNING"})
    queued = await submit(api, job(stack, "echo queued\n"))
    stack.stop()
    stack.start()
    body = await until_state(api, job_id, TERMINAL)
    assert body["state"] == "COMPLETED" and body["job_log"]["stdout"] == "before the restart\n"
    # The running job was ended with the executor and says so; the queued one ran afterwards.
    lost = await until_state(api, blocker, TERMINAL)
    assert lost["state"] == "NODE_FAIL" and "stopped while the job ran" in lost["error_msg"]
    assert not processes_with("3035")
    body = await until_state(api, queued, TERMINAL)
    assert body["state"] == "COMPLETED" and body["job_log"]["stdout"] == "queued\n"
