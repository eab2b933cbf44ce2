from services.executor.adapters.process import read_cpu_seconds, read_status
from services.executor.core.lifecycle import (
    LOST,
    LOST_MESSAGE,
    EndedBy,
    command_for,
    job_environment,
    job_returncode,
    outcome,
    requeued,
)
from services.executor.core.logs import TAIL_MARKER, TAIL_THRESHOLD_BYTES, render_log
from shared.events import JobSpec

SPEC = JobSpec(account="acct", name="job", partition="p", cwd="/w", stdout="o", stderr="e", script="true",
               time_limit_s=60, environment={"FOO": "bar", "PATH": "/mine"}, ntasks_per_node=2, cpus_per_task=3)


def test_environment_is_clean_then_the_jobs_then_ours():
    env = job_environment(SPEC, 42, "n1", "alice", "/home/alice")
    assert env["FOO"] == "bar" and env["PATH"] == "/mine"  # the job may set its own PATH
    assert env["SLURM_JOB_ID"] == env["SCNS_JOB_ID"] == "42"
    assert env["SCNS_CPUS"] == "6" and env["SLURM_CPUS_PER_TASK"] == "3" and env["SLURM_NTASKS_PER_NODE"] == "2"
    assert env["SLURM_SUBMIT_DIR"] == "/w" and env["SLURM_JOB_PARTITION"] == "p" and env["SCNS_NODE"] == "n1"
    assert "DATABASE_URL" not in env and "NATS_URL" not in env


def test_interpreter_from_shebang_else_bash():
    assert command_for("#!/usr/bin/env python3\nprint(1)", "/s") == ["/s"]
    assert command_for("echo hi", "/s") == ["/bin/bash", "/s"]


def test_outcomes():
    assert outcome(0, EndedBy.ITSELF, 0, 60) == ("COMPLETED", "0:0", None)
    assert outcome(3, EndedBy.ITSELF, 0, 60) == ("FAILED", "3:0", "Exited with code 3")
    killed_itself = outcome(-9, EndedBy.ITSELF, 0, 60)
    assert (killed_itself.state, killed_itself.exit_code) == ("FAILED", "0:9")
    assert outcome(0, EndedBy.CANCEL, 15, 60) == ("CANCELLED", "0:15", None)  # even if it trapped SIGTERM
    assert outcome(-9, EndedBy.CANCEL, 9, 60).exit_code == "0:9"
    assert outcome(-15, EndedBy.TIMEOUT, 15, 1800) == ("TIMEOUT", "0:15", "Time limit of 30:00 reached")
    assert outcome(-15, EndedBy.SHUTDOWN, 15, 60) == ("NODE_FAIL", "0:15", LOST_MESSAGE)


def test_small_logs_are_shown_whole_with_invalid_utf8_replaced():
    assert render_log(6, b"ok\n\xff\xfe\n") == "ok\n\ufffd\ufffd\n"


def test_large_logs_show_the_last_1000_lines_after_the_marker():
    lines = [f"line {i}".encode() for i in range(200_000)]
    data = b"\n".join(lines) + b"\n"
    shown = render_log(len(data), data[-TAIL_THRESHOLD_BYTES:])
    assert shown.startswith(TAIL_MARKER)
    body = shown[len(TAIL_MARKER):]
    assert body.splitlines() == [f"line {i}" for i in range(199_000, 200_000)]


def test_the_supervising_shells_status_gives_the_jobs_return_code():
    assert [job_returncode(code) for code in (0, 3, 127, 128, 137, 143, 200)] == [0, 3, 127, 128, -9, -15, 200]


def test_only_a_lost_run_of_a_job_with_requeue_is_requeued():
    assert requeued(LOST, requeue=True)
    assert requeued(outcome(0, EndedBy.SHUTDOWN, 15, 0), requeue=True)
    assert not requeued(LOST, requeue=False)
    for ended_by in (EndedBy.ITSELF, EndedBy.CANCEL, EndedBy.TIMEOUT):  # its own end, or ours: final
        assert not requeued(outcome(1, ended_by, 15, 60), requeue=True)


def test_the_cpu_time_the_supervising_shell_recorded(tmp_path):
    status = tmp_path / "status"
    status.write_text("3\n0m0.010000s 0m0.000000s\n1m2.500000s 0m0.250000s\n")
    assert read_status(status) == 3 and read_cpu_seconds(status) == 62.75
    status.write_text("3\n")  # written by an older supervisor: the status, no times
    assert read_status(status) == 3 and read_cpu_seconds(status) is None
