"""`scns` end to end: the command line, run as a subprocess against the whole stack, prints and
does what the API holds (checked through the API itself)."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from shared.embedded import free_port
from shared.stack import Stack, command_line_example

from .helpers import ACCOUNT, TERMINAL

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.config.api_url, headers={"Authorization": f"Bearer {stack.token}"},
                      timeout=30) as http:
        yield http


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The CLI's HOME (and so its config folder): empty, so no config of the machine's is read."""
    return tmp_path


def environment(stack: Stack, home: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg"),
           "SCNS_URL": stack.config.api_url, "SCNS_TOKEN": stack.token, "SCNS_ACCOUNT": ACCOUNT, "TZ": "UTC",
           "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    env.update(extra)
    return {key: value for key, value in env.items() if value is not None}


def scns(stack: Stack, home: Path, *args: str, cwd: Path | None = None, timeout: float = 120,
         **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scns_cli", *args], env=environment(stack, home, **env),
                          cwd=cwd or stack.config.work_dir, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """A failure: exit status not 0, nothing on stdout, one line on stderr (no traceback)."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scns: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def until(check, timeout: float = 60.0, what: str = "condition"):
    """Poll `check` until it gives something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def query(client: httpx.Client, job_id: str) -> dict:
    response = client.get(f"/jobs/query/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def until_state(client: httpx.Client, job_id: str, states: set[str], timeout: float = 60.0) -> dict:
    return until(lambda: (answer := query(client, job_id))["state"] in states and answer, timeout,
                 f"job {job_id} in {states}")


def job_dir(stack: Stack) -> str:
    """A fresh working directory for jobs (made by the executor, as the job's user)."""
    return str(stack.config.work_dir / f"cli-{uuid.uuid4().hex[:8]}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def submit(stack: Stack, home: Path, *args: str) -> str:
    job_id = ok(scns(stack, home, "submit", "--parsable", "-D", job_dir(stack), *args)).strip()
    assert job_id.isdigit(), job_id
    return job_id


# ---- submit ----------------------------------------------------------------------------------------

def test_a_script_with_sbatch_directives_is_submitted_with_their_spec(stack, home, client, tmp_path):
    script = tmp_path / "sim.sh"
    script.write_text("#!/bin/bash\n"
                      "#SBATCH --job-name=cli-directives\n"
                      "#SBATCH -A project_beta\n"
                      "#SBATCH --time=1:30:00   # the command line says otherwise\n"
                      "#SBATCH -c 2\n"
                      "#SBATCH --mem=256M\n"
                      "#SBATCH --output=out-%x-%j.txt\n"
                      "#SBATCH --mail-user=someone@example.org\n"
                      "\n"
                      "echo \"hello $GREETING from $SLURM_JOB_NAME\"\n"
                      "#SBATCH --job-name=not-a-directive-after-a-command\n")
    directory = job_dir(stack)
    result = scns(stack, home, "submit", str(script), "--parsable", "-t", "20", "-D", directory,
                  "--export=NONE,GREETING=directives")
    job_id = ok(result).strip()
    assert job_id.isdigit()
    assert "sim.sh:8" in result.stderr and "--mail-user" in result.stderr and "not supported" in result.stderr

    answer = until_state(client, job_id, TERMINAL)
    assert answer["state"] == "COMPLETED"
    detail = answer["detail"]
    assert (detail["job_name"], detail["account"], detail["allocated_cpus"]) == ("cli-directives", "project_beta", 2)
    assert answer["time"]["limit_time"] == "20:00"  # the option wins over the directive
    assert (detail["work_dir"], detail["data_source"]) == (directory, "CLI")
    assert answer["job_log"]["stdout"] == "hello directives from cli-directives\n"
    spec = client.get(f"/jobs/{job_id}/events").json()["events"][0]["data"]["spec"]
    assert spec["memory_mb"] == 256 and spec["cpus_per_task"] == 2 and spec["time_limit_s"] == 1200
    assert spec["stdout"] == spec["stderr"] == "out-cli-directives-%j.txt"
    assert spec["environment"] == {"GREETING": "directives"}


def test_the_lines_up_prints_for_the_command_line_work_as_printed(stack, home, client):
    """`./just up` shows how to use scns: its lines, pasted into a shell, submit a job and list it."""
    lines = command_line_example(stack).replace("'echo hello'", "'echo printed by up'")
    shown = subprocess.run(["bash", "-c", lines], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                           "HOME": str(home), "TZ": "UTC"}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    job_id = re.search(r"Submitted batch job (\d+)", shown.stdout).group(1)
    assert f"{job_id}  " in shown.stdout.split("Submitted batch job", 1)[1]  # in the queue or the history
    assert until_state(client, job_id, TERMINAL)["job_log"]["stdout"] == "printed by up\n"


def test_the_defaults_are_the_current_directory_and_slurm_output_files(stack, home, client):
    directory = stack.config.work_dir / unique("cli-cwd")
    directory.mkdir()
    directory.chmod(0o1777)  # the job's user writes its output here
    result = scns(stack, home, "submit", "--wrap", "echo out; echo err >&2", cwd=directory)
    out = ok(result)
    assert out.startswith("Submitted batch job ")
    job_id = out.split()[-1]
    answer = until_state(client, job_id, TERMINAL)
    assert answer["detail"]["work_dir"] == str(directory) and answer["detail"]["job_name"] == "wrap"
    assert (directory / f"slurm-{job_id}.out").read_text() == "out\nerr\n"  # stderr with stdout, as sbatch


def test_wait_exits_with_the_jobs_exit_status(stack, home, client):
    failed = scns(stack, home, "submit", "--wait", "-D", job_dir(stack), "--wrap", "exit 3")
    assert failed.returncode == 3, failed.stderr
    job_id = failed.stdout.split()[-1]
    answer = query(client, job_id)  # --wait returned: the job has ended
    assert answer["state"] == "FAILED" and answer["detail"]["exit_code"] == "3:0"

    passed = scns(stack, home, "submit", "--wait", "--json", "-D", job_dir(stack), "--wrap", "true")
    assert passed.returncode == 0, passed.stderr
    document = json.loads(passed.stdout)["jobs"][0]
    assert document["state"] == "COMPLETED" and document["exit_code"] == "0:0" and document["exit_status"] == 0
    assert query(client, document["job_id"])["state"] == "COMPLETED"


def test_many_scripts_are_submitted_and_a_bad_request_is_one_clear_line(stack, home, client, tmp_path):
    scripts = []
    for number in range(3):
        path = tmp_path / f"job{number}.sh"
        path.write_text(f"#!/bin/sh\n#SBATCH -J many-{number}\necho {number}\n")
        scripts.append(str(path))
    ids = ok(scns(stack, home, "submit", "--parsable", "-D", job_dir(stack), *scripts)).split()
    assert len(ids) == 3
    assert [query(client, job_id)["detail"]["job_name"] for job_id in ids] == ["many-0", "many-1", "many-2"]
    again = scns(stack, home, "submit", "-D", job_dir(stack), *scripts)
    assert len(ok(again).splitlines()) == 3 and "submitting [" not in again.stderr  # no progress bar: no terminal

    line = one_error_line(scns(stack, home, "submit", "-D", job_dir(stack), "-p", "no-such-partition",
                               "--wrap", "true"))
    assert "no-such-partition" in line and "known partitions: default" in line


# ---- queue, show, cancel ---------------------------------------------------------------------------------

def queue_rows(text: str) -> dict[str, list[str]]:
    lines = text.strip().splitlines()
    assert lines[0].split() == ["JOBID", "PARTITION", "NAME", "ACCOUNT", "ST", "TIME", "CPUS", "NODELIST(REASON)"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_queue_shows_running_and_pending_jobs_as_the_api_holds_them(stack, home, client):
    name = unique("cli-queue")
    running = submit(stack, home, "-J", name, "-c", "2", "--wrap", "sleep 300")
    until_state(client, running, {"RUNNING"})
    waiting = submit(stack, home, "-J", name, "-c", "2", "--wrap", "sleep 300")
    until(lambda: any(job["job_id"] == waiting for job in client.get("/jobs", params={"state": "PENDING"}).json()["jobs"]),
          what="the pending job in the read model")
    try:
        rows = queue_rows(ok(scns(stack, home, "queue", "-n", name)))
        assert set(rows) == {running, waiting}
        node = query(client, running)["detail"]["node_list"]
        assert rows[running][1:5] == ["default", name, ACCOUNT, "R"] and rows[running][6:] == ["2", node]
        assert rows[waiting][4] == "PD" and rows[waiting][7] in ("(Resources)", "(Priority)")

        listed = json.loads(ok(scns(stack, home, "queue", "-n", name, "--json")))["jobs"]
        api_jobs = {job["job_id"]: job for state in ("RUNNING", "PENDING")
                    for job in client.get("/jobs", params={"state": state}).json()["jobs"]}
        for job in listed:
            assert {key: job[key] for key in api_jobs[job["job_id"]]} == api_jobs[job["job_id"]]

        assert set(queue_rows(ok(scns(stack, home, "queue", "-n", name, "-t", "PD")))) == {waiting}
        assert ok(scns(stack, home, "queue", "-j", running, "--noheader", "--format", "%i|%t|%C")).strip() == \
            f"{running}|R|2"
        assert "\x1b" not in ok(scns(stack, home, "queue"))

        cancelled = ok(scns(stack, home, "cancel", running, waiting))
        assert f"job {running}: cancel requested" in cancelled and f"job {waiting}: cancel requested" in cancelled
        assert until_state(client, waiting, TERMINAL)["state"] == "CANCELLED"
        assert until_state(client, running, TERMINAL)["state"] == "CANCELLED"
        until(lambda: not queue_rows(ok(scns(stack, home, "queue", "-n", name))), what="an empty queue")
    finally:
        client.post(f"/jobs/cancel/{running}"), client.post(f"/jobs/cancel/{waiting}")


def test_show_prints_every_field_then_the_event_history(stack, home, client):
    job_id = submit(stack, home, "-J", "cli-show", "-t", "5", "--wrap", "echo shown")
    until_state(client, job_id, TERMINAL)
    answer = query(client, job_id)
    text = ok(scns(stack, home, "show", job_id))
    assert text.startswith(f"JobId={job_id} JobName=cli-show\n")
    for field in (f"JobState={answer['state']}", f"ExitCode={answer['detail']['exit_code']}",
                  f"NodeList={answer['detail']['node_list']}", f"NumCPUs={answer['detail']['allocated_cpus']}",
                  "TimeLimit=5:00", f"WorkDir={answer['detail']['work_dir']}",
                  f"StdOut={answer['detail']['work_dir']}/slurm-{job_id}.out"):
        assert field in text.split(), field
    history = text.split("Events:\n")[1].splitlines()
    events = client.get(f"/jobs/{job_id}/events").json()["events"]
    assert [line.split()[1:3] for line in history] == [[str(event["seq"]), event["type"]] for event in events]
    assert [line.split()[0] for line in history] == [event["time"][:19] for event in events]  # TZ=UTC

    document = json.loads(ok(scns(stack, home, "show", job_id, "--json")))
    assert document["events"] == events and document["job"]["detail"] == answer["detail"]
    line = one_error_line(scns(stack, home, "show", "999999999"))
    assert line == "scns: job 999999999 not found"


def test_cancel_by_name_asks_before_many_jobs_and_refuses_without_a_terminal(stack, home, client):
    name = unique("cli-cancel")
    ids = [submit(stack, home, "-J", name, "-c", "2", "--wrap", "sleep 300") for _ in range(6)]
    try:
        until(lambda: len(json.loads(ok(scns(stack, home, "queue", "-n", name, "--json")))["jobs"]) == 6,
              what="six jobs in the queue")
        refused = scns(stack, home, "cancel", "--name", name)
        assert "add --yes" in one_error_line(refused)
        assert all(query(client, job_id)["state"] in ("PENDING", "RUNNING") for job_id in ids)

        done = json.loads(ok(scns(stack, home, "cancel", "--name", name, "--yes", "--json")))
        assert sorted(done["cancelled"], key=int) == ids and done["errors"] == []
        for job_id in ids:
            assert until_state(client, job_id, TERMINAL)["state"] == "CANCELLED"
    finally:
        for job_id in ids:
            client.post(f"/jobs/cancel/{job_id}")


# ---- nodes, history, logs, events ---------------------------------------------------------------------

def test_nodes_shows_the_nodes_the_api_holds(stack, home, client):
    nodes = client.get("/nodes").json()["nodes"]
    lines = ok(scns(stack, home, "nodes")).strip().splitlines()
    assert lines[0].split()[:4] == ["PARTITION", "NODELIST", "STATE", "CPUS(A/I/T)"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    for node in nodes:
        row = rows[node["node_name"]]
        assert row[0] in node["partitions"] and row[4] == str(node["memory_mb"])
        assert row[3].split("/")[2] == str(node["total_cpus"]) == "2"
    assert json.loads(ok(scns(stack, home, "nodes", "--json")))["nodes"][0]["node_name"] == nodes[0]["node_name"]
    summary = ok(scns(stack, home, "nodes", "--summarize", "--noheader")).split()
    assert summary[:2] == ["default", "up"] and summary[3].endswith("/2")


def test_history_shows_finished_jobs_with_state_exit_code_and_elapsed(stack, home, client):
    name = unique("cli-history")
    failed = submit(stack, home, "-J", name, "--wrap", "sleep 1; exit 4")
    # Holds about 40 MB for a second (long enough for the watchdog, where there is no cgroup): its MaxRSS says so.
    completed = submit(stack, home, "-J", name, "--wrap", "held=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 1")
    until_state(client, failed, TERMINAL), until_state(client, completed, TERMINAL)
    until(lambda: {failed, completed} <= {job["job_id"] for state in ("FAILED", "COMPLETED") for job in
                                          client.get("/jobs", params={"state": state}).json()["jobs"]},
          what="the finished jobs in the read model")
    lines = ok(scns(stack, home, "history", "--name", name, "-S", "now-1hour")).strip().splitlines()
    assert lines[0].split()[:7] == ["JobID", "JobName", "Partition", "Account", "AllocCPUS", "State", "ExitCode"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {failed, completed}
    assert rows[failed][5:7] == ["FAILED", "4:0"] and rows[completed][5:7] == ["COMPLETED", "0:0"]
    assert rows[failed][10] >= "00:00:01"  # elapsed, start to end
    assert lines[0].split()[11:13] == ["MaxRSS", "TotalCPU"]
    assert 40_000 <= int(rows[completed][11].removesuffix("K")) < 1_000_000 and ":" in rows[completed][12]

    parsable = ok(scns(stack, home, "history", "-j", failed, "-P", "-n")).strip()
    assert parsable.split("|")[:7] == [failed, name, "default", ACCOUNT, "1", "FAILED", "4:0"]
    documents = json.loads(ok(scns(stack, home, "history", "--name", name, "--json")))["jobs"]
    assert {job["job_id"]: job["exit_code"] for job in documents} == {failed: "4:0", completed: "0:0"}
    assert {job["job_id"]: (job["peak_memory_kb"] or 0) >= 40_000 for job in documents} == {failed: False, completed: True}
    assert not json.loads(ok(scns(stack, home, "history", "--name", name, "-E", "now-1hour", "--json")))["jobs"]


def test_logs_prints_and_follows_a_jobs_output(stack, home, client):
    job_id = submit(stack, home, "-e", "err-%j.txt", "--wrap",
                    "for i in 1 2 3; do echo line $i; sleep 0.5; done; echo bad >&2")
    followed = scns(stack, home, "logs", "-f", job_id)
    assert ok(followed) == "line 1\nline 2\nline 3\n" and followed.stderr == "bad\n"
    assert query(client, job_id)["state"] == "COMPLETED"  # -f returned once the job had ended
    assert ok(scns(stack, home, "logs", job_id, "--stderr")) == "bad\n"
    document = json.loads(ok(scns(stack, home, "logs", job_id, "--json")))
    assert document["stdout"] == query(client, job_id)["job_log"]["stdout"] and document["stderr"] == "bad\n"

    together = submit(stack, home, "--wrap", "echo out; echo err >&2")  # sbatch's default: one file for both
    until_state(client, together, TERMINAL)
    merged = scns(stack, home, "logs", together, "--stderr")
    assert ok(merged) == "out\nerr\n" and "writes its stderr into its stdout file" in merged.stderr


def test_events_prints_a_jobs_events_from_the_stream(stack, home, client):
    job_id = submit(stack, home, "--wrap", "true")
    until_state(client, job_id, TERMINAL)
    expected = client.get(f"/jobs/{job_id}/events").json()["events"]
    lines = ok(scns(stack, home, "events", "--job", job_id, "--json", timeout=60)).splitlines()  # ends by itself
    streamed = [json.loads(line) for line in lines]
    assert [(event["seq"], event["type"]) for event in streamed] == [(e["seq"], e["type"]) for e in expected]
    assert all(event["job_id"] == int(job_id) for event in streamed)
    first = ok(scns(stack, home, "events", "--from", job_id, "--count", "1")).split()
    assert first[0] == job_id and first[2] == "JobSubmitted"


def test_queue_watch_redraws_from_the_event_stream(stack, home, client):
    name = unique("cli-watch")
    process = subprocess.Popen([sys.executable, "-m", "scns_cli", "queue", "--watch", "-n", name],
                               env=environment(stack, home), cwd=stack.config.work_dir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []

    def saw(predicate) -> bool:
        while True:
            try:
                seen.append(lines.get_nowait())
            except queue.Empty:
                return any(predicate(line) for line in seen)

    job_id = None
    try:
        until(lambda: saw(lambda line: line.startswith("JOBID")), what="the first listing")
        job_id = submit(stack, home, "-J", name, "--wrap", "sleep 300")
        until(lambda: saw(lambda line: line.split()[:1] == [job_id] and line.split()[4] == "R"),
              what="the job running in the watch")
        client.post(f"/jobs/cancel/{job_id}")
        until_state(client, job_id, TERMINAL)

        def gone() -> bool:
            saw(lambda line: False)
            last = "".join(seen).rsplit("JOBID", 1)[-1]
            return job_id not in [line.split()[0] for line in last.splitlines()[1:] if line.split()]
        until(gone, what="the cancelled job gone from the watch")
        assert "\x1b" not in "".join(seen)
    finally:
        process.terminate()
        process.wait(10)
        if job_id:
            client.post(f"/jobs/cancel/{job_id}")


# ---- output and errors -----------------------------------------------------------------------------------

def test_colour_only_on_a_terminal_and_never_with_no_color(stack, home):
    def on_a_terminal(**env: str) -> str:
        main, secondary = pty.openpty()
        try:
            process = subprocess.run([sys.executable, "-m", "scns_cli", "nodes"], env=environment(stack, home, **env),
                                     stdout=secondary, stderr=subprocess.PIPE, timeout=60)
            assert process.returncode == 0, process.stderr
            os.close(secondary)
            secondary = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the terminal closed: everything has been read
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode()
        finally:
            os.close(main)
            if secondary >= 0:
                os.close(secondary)

    assert "\x1b[" in on_a_terminal()
    assert "\x1b" not in on_a_terminal(NO_COLOR="1")
    for command in (["nodes"], ["queue", "-t", "all"], ["history", "-S", "now-1day"], ["config"]):
        assert "\x1b" not in ok(scns(stack, home, *command)), command


def test_a_bad_token_gives_one_clear_line(stack, home):
    line = one_error_line(scns(stack, home, "queue", SCNS_TOKEN="not-a-token"))
    assert "refused the token" in line and "SCNS_TOKEN" in line
    line = one_error_line(scns(stack, home, "nodes", SCNS_TOKEN=None))
    assert "no API token" in line


def test_an_unreachable_server_gives_one_clear_line(stack, home):
    port = free_port()  # nothing listens there
    result = scns(stack, home, "queue", SCNS_URL=f"http://127.0.0.1:{port}")
    line = one_error_line(result)
    assert f"cannot reach the SCNS server at http://127.0.0.1:{port}" in line and "refused" in line
    assert result.stdout == ""
    assert "is not an http" in one_error_line(scns(stack, home, "nodes", SCNS_URL="ftp://x"))


def test_another_accounts_job_is_forbidden(stack, home, client):
    token_name = unique("cli-user")
    created = client.post("/admin/tokens", json={"name": token_name, "account": "project_beta"})
    assert created.status_code == 201, created.text
    user_token = created.json()["token"]
    try:
        job_id = submit(stack, home, "--wrap", "true")  # the admin's, for project_alpha
        line = one_error_line(scns(stack, home, "show", job_id, SCNS_TOKEN=user_token))
        assert line.startswith("scns: forbidden:")
        refused = scns(stack, home, "cancel", job_id, SCNS_TOKEN=user_token)
        assert refused.returncode != 0 and f"job {job_id}: forbidden" in refused.stderr
    finally:
        client.delete(f"/admin/tokens/{token_name}")


def test_the_config_file_serves_when_the_environment_is_silent(stack, home):
    ok(scns(stack, home, "config", "set", "url", stack.config.api_url, SCNS_URL=None))
    ok(scns(stack, home, "config", "set", "token", stack.token, SCNS_TOKEN=None))
    shown = json.loads(ok(scns(stack, home, "config", "--json", SCNS_URL=None, SCNS_TOKEN=None)))
    assert shown["url"] == {"value": stack.config.api_url, "from": "config file"}
    assert stack.token not in json.dumps(shown)  # masked
    nodes = json.loads(ok(scns(stack, home, "nodes", "--json", SCNS_URL=None, SCNS_TOKEN=None)))["nodes"]
    assert nodes and nodes[0]["total_cpus"] == 2
    assert "refused the token" in one_error_line(scns(stack, home, "nodes", SCNS_URL=None, SCNS_TOKEN="wrong"))
