"""API.md, row by row, over HTTP against the whole stack: what an original client sees."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families
import pytest

from shared.events import LOGS_SUBJECT

from ..conftest import eventually
from .helpers import ACCOUNT, TERMINAL, job, submit, until_state

pytestmark = pytest.mark.e2e

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


async def rejected(api, body: dict, field: str) -> dict:
    """Submit, expect a 422 naming `field`; the error item."""
    response = await api.post("/jobs/submit", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert all(set(e) == {"type", "loc", "msg", "input"} for e in errors)
    named = [e for e in errors if e["loc"][-1] == field]
    assert named, errors
    return named[0]


@pytest.fixture
async def user_api(api, stack):
    """A client with a fresh `user` token of a given account (revoked afterwards)."""
    made = []

    async def make(account: str) -> httpx.AsyncClient:
        name = f"user-{uuid.uuid4().hex[:8]}"
        response = await api.post("/admin/tokens", json={"name": name, "account": account, "role": "user"})
        assert response.status_code == 201, response.text
        client = httpx.AsyncClient(base_url=stack.config.api_url, timeout=30,
                                   headers={"Authorization": f"Bearer {response.json()['token']}"})
        made.append((name, client))
        return client

    yield make
    for name, client in made:
        await client.aclose()
        await api.delete(f"/admin/tokens/{name}")


# ---- conventions ---------------------------------------------------------------------------

async def test_every_response_carries_request_id_and_process_time(api):
    for method, path in [("GET", "/"), ("GET", "/jobs/query/1"), ("GET", "/no/such/route"),
                         ("POST", "/jobs/submit"), ("GET", "/health")]:
        response = await api.request(method, path, headers={"X-Request-ID": "trace-me-42"})
        assert response.headers["x-request-id"] == "trace-me-42", (method, path)
        assert re.match(r"^\d+\.\d{3}$", response.headers["x-process-time"]), (method, path)
    generated = (await api.get("/")).headers["x-request-id"]
    assert uuid.UUID(generated).version == 4


async def test_non_ascii_is_not_escaped(api):
    response = await api.get("/jobs/query/987654321")
    assert response.status_code == 404
    assert "作业 987654321 未找到".encode() in response.content


async def test_openapi_and_docs_are_served(api):
    document = (await api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.") and "/jobs/submit" in document["paths"]
    for page in ("/docs", "/redoc"):
        response = await api.get(page)
        assert response.status_code == 200 and "/openapi.json" in response.text
    catalogue = (await api.get("/asyncapi.json", headers={"Authorization": ""})).json()  # public
    assert catalogue["asyncapi"].startswith("3.") and catalogue["channels"]["JobSubmitted"]["address"] == "scns.submit"


# ---- authentication ---------------------------------------------------------------------------

async def test_missing_or_wrong_token_is_401(stack):
    async with httpx.AsyncClient(base_url=stack.config.api_url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
            response = await anonymous.get("/jobs", headers=headers)
            assert response.status_code == 401 and isinstance(response.json()["detail"], str)
        assert (await anonymous.get("/health")).status_code == 200  # public
        assert (await anonymous.get("/")).status_code == 200


async def test_a_user_sees_and_touches_only_its_own_account(api, stack, user_api):
    alice, bob = await user_api("acct-alice"), await user_api("acct-bob")
    theirs = await submit(alice, job(stack, "echo alice-secret\n", account="acct-alice"))
    await until_state(alice, theirs, TERMINAL)
    assert (await bob.post("/jobs/submit", json=job(stack, "true\n", account="acct-alice"))).status_code == 403
    for method, path in [("GET", f"/jobs/query/{theirs}"), ("POST", f"/jobs/cancel/{theirs}"),
                         ("GET", f"/jobs/{theirs}/events"), ("GET", "/jobs?account=acct-alice")]:
        response = await bob.request(method, path)
        assert response.status_code == 403, (method, path, response.text)
        assert "alice-secret" not in response.text
    listed = (await bob.get("/jobs")).json()["jobs"]
    assert all(j["account"] == "acct-bob" for j in listed)
    assert (await bob.get("/admin/tokens")).status_code == 403
    bobs_view = (await bob.get("/dashboard")).json()
    assert all(j["account"] == "acct-bob" for j in bobs_view["running_jobs"] + bobs_view["pending_jobs"])
    assert bobs_view["job_stats"]["total"] == len(listed)  # only bob's jobs are counted
    # An admin may do everything.
    assert (await api.get(f"/jobs/query/{theirs}")).json()["job_log"]["stdout"] == "alice-secret\n"


async def test_a_revoked_token_stops_working_at_once(api, stack):
    created = (await api.post("/admin/tokens", json={"name": f"short-{uuid.uuid4().hex[:6]}",
                                                     "account": ACCOUNT})).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await api.get("/jobs", headers=headers)).status_code == 200
    listed = (await api.get("/admin/tokens")).json()["tokens"]
    assert any(t["name"] == created["name"] for t in listed) and "token" not in listed[0]
    assert (await api.delete(f"/admin/tokens/{created['name']}")).status_code == 200
    assert (await api.get("/jobs", headers=headers)).status_code == 401
    assert (await api.delete(f"/admin/tokens/{created['name']}")).status_code == 404


async def test_token_names_are_unique_and_validated(api):
    name = f"dup-{uuid.uuid4().hex[:6]}"
    assert (await api.post("/admin/tokens", json={"name": name, "account": "a"})).status_code == 201
    assert (await api.post("/admin/tokens", json={"name": name, "account": "a"})).status_code == 409
    bad = await api.post("/admin/tokens", json={"name": "no spaces", "account": "a", "role": "root"})
    assert bad.status_code == 422
    await api.delete(f"/admin/tokens/{name}")


# ---- submit: every row of the table ----------------------------------------------------------

@pytest.mark.parametrize("field, value, kind", [
    ("account", "", "string_too_short"), ("account", "a" * 256, "string_too_long"),
    ("name", "", "string_too_short"), ("name", "n" * 256, "string_too_long"),
    ("partition", "", "string_too_short"), ("partition", "p" * 101, "string_too_long"),
    ("current_working_directory", "/" + "d" * 1024, "string_too_long"),
    ("standard_output", "o" * 513, "string_too_long"), ("standard_error", "", "string_too_short"),
    ("ntasks_per_node", 0, "greater_than_equal"), ("cpus_per_task", -1, "greater_than_equal"),
    ("ntasks_per_node", "two", "int_parsing"), ("memory_per_node", "1X", "string_pattern_mismatch"),
    ("memory_per_node", "1" * 21, "string_too_long"), ("environment", {"A": 1}, "string_type"),
    ("exclusive", "maybe", "bool_type"), ("account", 5, "string_type"),
])
async def test_field_types_and_lengths(api, stack, field, value, kind):
    error = await rejected(api, job(stack, "true\n", **{field: value}), field if field != "environment" else field)
    assert error["type"] == kind and error["loc"][:2] == ["body", "job"]


async def test_missing_required_fields_and_json_syntax(api, stack):
    body = job(stack, "true\n")
    del body["job"]["time_limit"]
    error = await rejected(api, body, "time_limit")
    assert (error["type"], error["msg"]) == ("missing", "Field required")
    response = await api.post("/jobs/submit", content=b'{"job": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


async def test_unknown_keys_are_ignored_at_every_level(api, stack):
    body = job(stack, "true\n", color="blue")
    body["extra"] = {"anything": [1, 2]}
    await submit(api, body)


@pytest.mark.parametrize("limit, shown", [
    ("30", "30:00"), ("5", "5:00"), ("0:0:3", "0:03"), ("1:30", "1:30:00"), ("1:30:15", "1:30:15"),
    ("1-0", "1-00:00:00"), ("2-3:04", "2-03:04:00"), ("1-2:03:04", "1-02:03:04"),
    ("0", "UNLIMITED"), ("UNLIMITED", "UNLIMITED"), ("infinite", "UNLIMITED"),
])
async def test_time_limit_grammar_and_its_display(api, stack, limit, shown):
    job_id = await submit(api, job(stack, "true\n", time_limit=limit))
    assert (await api.get(f"/jobs/query/{job_id}")).json()["time"]["limit_time"] == shown


@pytest.mark.parametrize("limit", ["-5", "+5", "1_0", "1:60", "1:00:60", "1-24", "1.5", "abc", "1:2:3:4"])
async def test_time_limit_rejects_the_holes_of_the_original(api, stack, limit):
    error = await rejected(api, job(stack, "true\n", time_limit=limit), "time_limit")
    assert error["msg"].startswith("Value error, ")


async def test_partition_must_exist_and_requests_must_fit_its_largest_node(api, stack):
    error = await rejected(api, job(stack, "true\n", partition="gpu"), "partition")
    assert "default" in error["msg"] and error["msg"].startswith("Value error, ")
    error = await rejected(api, job(stack, "true\n", cpus=3), "cpus_per_task")
    assert "2" in error["msg"]
    body = job(stack, "true\n", ntasks_per_node=2, cpus=2)
    assert (await rejected(api, body, "cpus_per_task"))["msg"].startswith("Value error, ")
    error = await rejected(api, job(stack, "true\n", memory_per_node="9000G"), "memory_per_node")
    assert "MB" in error["msg"]


async def test_paths_must_stay_inside_the_job_roots(api, stack):
    root = stack.config.work_dir
    (root / "escape").symlink_to("/etc") if not (root / "escape").exists() else None
    for cwd in ("relative/dir", "/etc", f"{root}/../outside", f"{root}/escape/sub"):
        error = await rejected(api, job(stack, "true\n", current_working_directory=cwd), "current_working_directory")
        assert error["msg"].startswith("Value error, ")
    for field in ("standard_output", "standard_error"):
        await rejected(api, job(stack, "true\n", **{field: "../../../../etc/passwd-%j"}), field)


async def test_an_ended_jobs_output_is_asked_of_its_node_once_for_repeated_queries(api, stack, log):
    asked = []

    async def note(msg) -> None:
        asked.append(json.loads(msg.data)["job_id"])

    listener = await log.nc.subscribe(LOGS_SUBJECT.format(node=stack.config.node_name), cb=note)
    try:
        job_id = await submit(api, job(stack, "echo kept\n"))
        await until_state(api, job_id, TERMINAL)
        asked_while_running = asked.count(int(job_id))
        for _ in range(3):
            assert (await api.get(f"/jobs/query/{job_id}")).json()["job_log"]["stdout"] == "kept\n"
        await log.nc.flush()
        assert asked.count(int(job_id)) - asked_while_running <= 1
    finally:
        await listener.unsubscribe()


async def test_cwd_and_output_folders_are_created_and_percent_j_expands(api, stack):
    cwd = stack.config.work_dir / f"made-{uuid.uuid4().hex[:6]}" / "deep"
    body = job(stack, "pwd\necho to-err >&2\n", current_working_directory=str(cwd),
               standard_output="logs/out-%j.txt", standard_error=str(cwd / "errs" / "%j.err"))
    job_id = await submit(api, body)
    result = await until_state(api, job_id, TERMINAL)
    assert result["job_log"] == {"stdout": f"{cwd}\n", "stderr": "to-err\n"}
    assert (cwd / "logs" / f"out-{job_id}.txt").exists() and (cwd / "errs" / f"{job_id}.err").exists()


async def test_environment_limits(api, stack):
    await rejected(api, job(stack, "true\n", environment={f"V{i}": "x" for i in range(257)}), "environment")
    await rejected(api, job(stack, "true\n", environment={"BIG": "x" * (129 * 1024)}), "environment")


async def test_script_blank_or_too_large(api, stack):
    await rejected(api, job(stack, " \n\t"), "script")
    await rejected(api, job(stack, "#" * (1024 * 1024 + 1)), "script")


async def test_script_interpreter_from_shebang_else_bash(api, stack):
    python = await submit(api, job(stack, "#!/usr/bin/env python3\nimport sys\nprint(sys.version_info[0])\n"))
    bash = await submit(api, job(stack, "echo ${BASH_VERSION:+bash}\n"))
    assert (await until_state(api, python, TERMINAL))["job_log"]["stdout"] == "3\n"
    assert (await until_state(api, bash, TERMINAL))["job_log"]["stdout"] == "bash\n"


async def test_the_environment_of_a_running_job(api, stack):
    body = job(stack, "env\n", name="env-check", environment={"MY_VAR": "mine"}, ntasks_per_node=2)
    job_id = await submit(api, body)
    lines = (await until_state(api, job_id, TERMINAL))["job_log"]["stdout"].splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["MY_VAR"] == "mine" and env["SCNS_JOB_ID"] == env["SLURM_JOB_ID"] == job_id
    assert env["SLURM_JOB_NAME"] == env["SCNS_JOB_NAME"] == "env-check" and env["SCNS_CPUS"] == "2"
    assert env["SLURM_NTASKS_PER_NODE"] == "2" and env["SLURM_CPUS_PER_TASK"] == "1"
    assert env["SLURM_JOB_PARTITION"] == "default" and env["SCNS_NODE"] == stack.config.node_name
    assert env["SLURM_SUBMIT_DIR"] == str(stack.config.work_dir / "e2e")
    for base in ("PATH", "HOME", "USER", "LANG", "SHELL", "TMPDIR"):
        assert base in env
    for secret in ("NATS_URL", "DATABASE_URL", "SCNS_ADMIN_TOKEN", "PYTHONUNBUFFERED", "VIRTUAL_ENV"):
        assert secret not in env


# ---- query ----------------------------------------------------------------------------------

async def test_query_shape_and_formats(api, stack):
    job_id = await submit(api, job(stack, "echo hi\n", time_limit="30"))
    body = await until_state(api, job_id, TERMINAL)
    assert set(body) == {"job_id", "state", "error_msg", "time", "job_log", "detail"} and body["job_id"] == job_id
    assert set(body["time"]) == {"submit_time", "start_time", "end_time", "eligible_time", "elapsed_time",
                                 "limit_time"}
    for key in ("submit_time", "start_time", "end_time", "eligible_time"):
        assert Z_TIME.match(body["time"][key]), body["time"]
    assert re.match(r"^\d+-\d\d:\d\d:\d\d$", body["time"]["elapsed_time"])
    peak_memory_kb, cpu_seconds = body["detail"].pop("peak_memory_kb"), body["detail"].pop("cpu_seconds")
    # (no peak for a job shorter than a poll of the watchdog, the containment without cgroups)
    assert (peak_memory_kb is None or peak_memory_kb > 0) and isinstance(cpu_seconds, float) and cpu_seconds >= 0
    assert body["detail"] == {
        "job_name": "test_job", "user": ACCOUNT, "partition": "default", "allocated_cpus": 1, "allocated_nodes": 1,
        "node_list": stack.config.node_name, "exit_code": "0:0", "work_dir": str(stack.config.work_dir / "e2e"),
        "data_source": "API", "account": ACCOUNT, "reason": "None", "requeue": False, "restarts": 0,
        "trace_id": None,
    }


async def test_exit_codes_and_error_messages(api, stack):
    cases = {
        "exit 3\n": ("FAILED", "3:0", "Exited with code 3"),
        "kill -9 $$\n": ("FAILED", "0:9", "Killed by SIGKILL"),
        "true\n": ("COMPLETED", "0:0", None),
    }
    for script, expected in cases.items():
        body = await until_state(api, await submit(api, job(stack, script)), TERMINAL)
        assert (body["state"], body["detail"]["exit_code"], body["error_msg"]) == expected, script


async def test_pending_job_before_allocation(api, stack):
    blocker = await submit(api, job(stack, "sleep 3041\n", cpus=2))
    await until_state(api, blocker, {"RUNNING"})
    first = await submit(api, job(stack, "true\n"))
    second = await submit(api, job(stack, "true\n"))

    async def both_projected():  # a reason is worked out from the read model, which may trail a little
        listed = (await api.get("/jobs", params={"state": "PENDING"})).json()["jobs"]
        return {first, second} <= {j["job_id"] for j in listed}

    await eventually(both_projected, what="the projection of the pending jobs")
    waiting = [(await api.get(f"/jobs/query/{j}")).json() for j in (first, second)]
    for body in waiting:
        assert body["state"] == "PENDING" and body["detail"]["node_list"] == "" and body["detail"]["exit_code"] == ":"
        assert body["time"]["start_time"] is None and body["time"]["elapsed_time"] == "0-00:00:00"
        assert body["job_log"] == {"stdout": "", "stderr": ""}
    assert [w["detail"]["reason"] for w in waiting] == ["Resources", "Priority"]
    await api.post(f"/jobs/cancel/{blocker}")
    for j in (first, second):
        assert (await until_state(api, j, TERMINAL))["state"] == "COMPLETED"


async def test_exclusive_job_is_allocated_the_whole_node(api, stack):
    body = await until_state(api, await submit(api, job(stack, "true\n", exclusive=True)), TERMINAL)
    assert body["detail"]["allocated_cpus"] == 2


async def test_large_logs_show_the_tail_with_the_marker_and_bad_utf8_is_replaced(api, stack):
    big = await submit(api, job(stack, "seq 1 300000\nprintf 'bad \\377\\376 bytes\\n' >&2\n"))
    body = await until_state(api, big, TERMINAL)
    stdout = body["job_log"]["stdout"]
    assert stdout.startswith("...（仅展示最后 1000 行）...\n")
    assert stdout.splitlines()[1:] == [str(n) for n in range(299001, 300001)]
    assert body["job_log"]["stderr"] == "bad \ufffd\ufffd bytes\n"


async def test_path_parameter_must_be_an_integer(api):
    for bad in ("abc", "1.0", "1e3"):
        response = await api.get(f"/jobs/query/{bad}")
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "job_id"]
    for no_such in ("-1", "0"):  # integers, as the original's int parameter: not found
        assert (await api.get(f"/jobs/query/{no_such}")).status_code == 404


# ---- cancel ---------------------------------------------------------------------------------

async def test_cancel_of_a_finished_job_succeeds_and_changes_nothing(api, stack):
    job_id = await submit(api, job(stack, "true\n"))
    await until_state(api, job_id, TERMINAL)
    response = await api.post(f"/jobs/cancel/{job_id}")
    assert response.status_code == 200 and response.json() == {"msg": "取消成功"}
    assert (await api.get(f"/jobs/query/{job_id}")).json()["state"] == "COMPLETED"


# ---- lists, events, nodes, dashboard, health, root -------------------------------------------

async def test_job_list_filters_newest_first_and_pages_stably(api, stack, user_api):
    account = f"acct-{uuid.uuid4().hex[:6]}"
    client = await user_api(account)
    mine = [await submit(client, job(stack, "true\n", account=account)) for _ in range(5)]

    async def all_listed():  # the list reads the read model, which may trail the log a little
        return len((await client.get("/jobs")).json()["jobs"]) == len(mine)

    await eventually(all_listed, what="the projection of the submitted jobs")
    first = (await client.get("/jobs", params={"limit": 2})).json()
    assert [j["job_id"] for j in first["jobs"]] == mine[::-1][:2] and first["next_cursor"]
    await submit(client, job(stack, "true\n", account=account))  # a submit between pages
    second = (await client.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    third = (await client.get("/jobs", params={"limit": 2, "cursor": second["next_cursor"]})).json()
    assert [j["job_id"] for j in second["jobs"] + third["jobs"]] == mine[::-1][2:]
    assert third["next_cursor"] is None
    summary = first["jobs"][0]
    assert set(summary) == {"job_id", "name", "account", "partition", "state", "allocated_cpus", "node_list",
                            "submit_time", "start_time", "end_time", "exit_code", "peak_memory_kb", "cpu_seconds"}
    for params in ({"limit": 0}, {"limit": 1001}, {"state": "DONE"}, {"cursor": "garbage"}):
        assert (await client.get("/jobs", params=params)).status_code == 422, params
    for state in ("COMPLETED", "PENDING"):
        listed = (await api.get("/jobs", params={"state": state, "partition": "default", "limit": 50})).json()
        assert all(j["state"] == state and j["partition"] == "default" for j in listed["jobs"])


async def test_job_events_are_the_log_in_order(api, stack):
    job_id = await submit(api, job(stack, "true\n"))
    await until_state(api, job_id, TERMINAL)
    body = (await api.get(f"/jobs/{job_id}/events")).json()
    assert body["job_id"] == job_id
    assert [e["type"] for e in body["events"]] == ["JobSubmitted", "JobAllocated", "JobStarted", "JobFinished"]
    assert body["events"][0]["seq"] == int(job_id)
    assert [e["seq"] for e in body["events"]] == sorted(e["seq"] for e in body["events"])
    assert all(Z_TIME.match(e["time"]) for e in body["events"])
    assert body["events"][-1]["data"]["exit_code"] == "0:0"
    assert (await api.get("/jobs/987654321/events")).status_code == 404


async def test_nodes_and_dashboard_show_real_capacity(api, stack):
    blocker = await submit(api, job(stack, "sleep 3042\n"))
    await until_state(api, blocker, {"RUNNING"})
    (node,) = (await api.get("/nodes")).json()["nodes"]
    assert node["node_name"] == stack.config.node_name and node["state"] == "MIXED"
    assert (node["total_cpus"], node["allocated_cpus"], node["partitions"]) == (2, 1, ["default"])
    assert Z_TIME.match(node["last_heartbeat"])
    dashboard = (await api.get("/dashboard")).json()
    assert dashboard["resource_stats"] == {"total_cpus": 2, "allocated_cpus": 1, "available_cpus": 1,
                                           "utilization_rate": 50.0}
    assert dashboard["node_info"][0]["available"] is True
    assert any(j["job_id"] == int(blocker) for j in dashboard["running_jobs"])
    listed = (await api.get("/jobs", params={"limit": 1000})).json()["jobs"]
    stats = dashboard["job_stats"]
    assert stats["total"] >= len(listed) and stats["running"] >= 1
    assert stats["total"] == sum(stats[k] for k in ("running", "pending", "completed", "failed", "cancelled"))
    await api.post(f"/jobs/cancel/{blocker}")
    await until_state(api, blocker, TERMINAL)


async def test_health_and_root(api):
    health = (await api.get("/health")).json()
    assert health["status"] == "healthy" and health["service"] == "scns-conductor-api"
    assert set(health["checks"]) == {"nats", "postgresql", "projection"}
    assert (await api.get("/")).json() == {"service": "SCNS-Conductor API", "version": "0.1.0", "status": "running"}


async def test_the_tokens_command_creates_and_revokes_tokens_the_api_accepts(api, stack):
    env = {**os.environ, **stack.tool_environment(), "SCNS_ADMIN_TOKEN": stack.token}

    def tokens(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.gateway.tokens", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = tokens("create", name, "--account", "acct-cli")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.get("/jobs", headers=headers)).status_code == 200
    assert (await api.post("/jobs/submit", json=job(stack, "true\n"), headers=headers)).status_code == 403
    assert name in tokens("list").stdout and token not in tokens("list").stdout
    assert tokens("create", name, "--account", "x").returncode == 1  # names are unique
    assert tokens("revoke", name).returncode == 0
    assert (await api.get("/jobs", headers=headers)).status_code == 401


async def test_rebuild_replays_the_log_into_an_equal_read_model_while_queries_go_on(api, stack):
    job_id = await submit(api, job(stack, "echo before rebuild\n"))
    await until_state(api, job_id, TERMINAL)
    before = (await api.get("/jobs", params={"limit": 1000})).json()["jobs"]
    report = (await api.post("/admin/rebuild", timeout=300)).json()
    assert report["error"] is None and report["equal_to_live"] is True and report["events"] > 0
    assert report["position"] >= int(job_id)
    after = (await api.get("/jobs", params={"limit": 1000})).json()["jobs"]
    assert after == before
    assert (await api.get(f"/jobs/query/{job_id}")).json()["job_log"]["stdout"] == "before rebuild\n"
    fresh = await submit(api, job(stack, "echo after rebuild\n"))  # the live projection goes on
    assert (await until_state(api, fresh, TERMINAL))["state"] == "COMPLETED"
    listed = (await api.get("/jobs", params={"limit": 1})).json()["jobs"]
    assert listed[0]["job_id"] == fresh


async def test_a_drained_node_takes_no_new_jobs_until_resumed(api, stack):
    node = stack.config.node_name
    assert (await api.post("/admin/nodes/no-such-node/drain")).status_code == 404
    assert (await api.post(f"/admin/nodes/{node}/drain")).status_code == 200
    try:
        waiting = await submit(api, job(stack, "echo resumed\n"))

        async def drained():
            (shown,) = (await api.get("/nodes")).json()["nodes"]
            return shown["state"] == "DRAIN"

        await eventually(drained, what="/nodes to show DRAIN")
        body = (await api.get(f"/jobs/query/{waiting}")).json()
        assert body["state"] == "PENDING" and body["detail"]["reason"] == "PartitionDown"
    finally:
        assert (await api.post(f"/admin/nodes/{node}/resume")).status_code == 200
    assert (await until_state(api, waiting, TERMINAL))["job_log"]["stdout"] == "resumed\n"


# ---- GET /events (server-sent events) ----------------------------------------------------------

async def read_events(client: httpx.AsyncClient, enough, **headers) -> list[dict]:
    """Server-sent events from /events, each {"id", "event", "data"}, until `enough(events)`."""
    events: list[dict] = []
    current: dict = {}
    async with client.stream("GET", "/events", headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(30):
            async for line in response.aiter_lines():
                if line:
                    field, _, value = line.partition(":")
                    current[field] = value.strip()
                    continue
                if current:
                    events.append(current)
                    current = {}
                if enough(events):
                    return events
    raise AssertionError("the stream ended")


def job_of_sse(event: dict) -> int:
    return int(event["id"]) if event["event"] == "JobSubmitted" else json.loads(event["data"]).get("job_id")


async def test_the_event_stream_shows_a_user_only_its_jobs_and_resumes_after_last_event_id(api, stack, user_api):
    alice = await user_api("acct-sse-a")
    other = int(await submit(api, job(stack, "true\n", account="acct-sse-b")))
    mine = int(await submit(alice, job(stack, "echo streamed\n", account="acct-sse-a")))
    await until_state(alice, str(mine), TERMINAL)
    await until_state(api, str(other), TERMINAL)

    def mine_finished(events):
        return any(e["event"] == "JobFinished" and job_of_sse(e) == mine for e in events)

    events = await read_events(alice, mine_finished, **{"Last-Event-ID": str(min(mine, other) - 1)})
    assert other not in {job_of_sse(e) for e in events}  # another account's job is not shown
    of_mine = [e for e in events if job_of_sse(e) == mine]
    assert [e["event"] for e in of_mine] == ["JobSubmitted", "JobAllocated", "JobStarted", "JobFinished"]
    assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)  # in stream order
    # Reconnecting with the id of the allocation continues right after it: no gap, no repeat.
    allocated = of_mine[1]
    (resumed,) = await read_events(alice, lambda got: len(got) == 1, **{"Last-Event-ID": allocated["id"]})
    assert resumed == events[events.index(allocated) + 1]


async def test_the_event_stream_refuses_a_last_event_id_it_never_sent(api):
    response = await api.get("/events", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


# ---- GET /metrics -------------------------------------------------------------------------------

async def scrape(stack) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by Prometheus' own parser."""
    async with httpx.AsyncClient(base_url=stack.config.api_url) as anonymous:  # public, as scrapers expect
        response = await anonymous.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


async def test_metrics_parse_and_the_queue_depth_follows_submits_and_finishes(api, stack):
    depth = ("scns_queue_depth", (("partition", "default"),))
    before = await scrape(stack)
    blocker = await submit(api, job(stack, "sleep 3063\n", cpus=2, time_limit="60"))
    await until_state(api, blocker, {"RUNNING"})
    waiting = await submit(api, job(stack, "echo waited\n"))  # the node is full: it queues

    async def queued(expected):
        return (await scrape(stack)).get(depth, 0) == expected

    await eventually(lambda: queued(before.get(depth, 0) + 1), what="the queue depth to count the waiting job")
    await api.post(f"/jobs/cancel/{blocker}")
    await until_state(api, waiting, TERMINAL)
    await eventually(lambda: queued(before.get(depth, 0)), what="the queue depth to come back down")
    after = await scrape(stack)
    assert after[("scns_jobs_submitted_total", ())] == before[("scns_jobs_submitted_total", ())] + 2
    completed = ("scns_jobs_finished_total", (("state", "COMPLETED"),))
    assert after[completed] == before.get(completed, 0) + 1
    waits = ("scns_job_wait_seconds_count", ())
    assert after[waits] == before[waits] + 2 and after[("scns_node_cpus", (("node", stack.config.node_name),))] == 2


async def test_an_open_event_stream_ends_once_its_token_is_revoked(api, stack):
    name = f"sse-{uuid.uuid4().hex[:8]}"
    token = (await api.post("/admin/tokens", json={"name": name, "account": "acct-sse-r", "role": "user"})).json()
    async with httpx.AsyncClient(base_url=stack.config.api_url, timeout=60,
                                 headers={"Authorization": f"Bearer {token['token']}"}) as revoked:
        async with revoked.stream("GET", "/events") as response:
            assert response.status_code == 200
            assert (await api.delete(f"/admin/tokens/{name}")).status_code == 200
            seen: list[str] = []

            async def keep_submitting():  # events arrive, so the stream re-checks its token as they come
                while True:
                    await submit(api, job(stack, "true\n", account="acct-sse-r"))
                    await asyncio.sleep(0.5)

            submitting = asyncio.create_task(keep_submitting())
            try:
                async with asyncio.timeout(30):  # a stream that went on would time out here
                    async for line in response.aiter_lines():
                        seen.append(line)
            finally:
                submitting.cancel()
    assert any(line.startswith("event: JobSubmitted") for line in seen)  # it was streaming, then it ended
