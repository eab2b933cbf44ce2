import logging
import os
import pwd
import subprocess

import pytest

from services.executor.adapters.limits import CgroupTree, RunIdentity, cgroup_mounts, job_limits, oom_kills
from services.executor.adapters.process import read_cpu_seconds, read_status
from services.executor.bootstrap import job_users, limits, node_config
from services.executor.core.lifecycle import (
    LOST,
    LOST_MESSAGE,
    EndedBy,
    UnexportableVariable,
    command_for,
    ended_by_memory,
    environment_script,
    format_memory,
    job_environment,
    job_returncode,
    outcome,
    requeued,
)
from services.executor.core.users import JobUserSettingError, parse_umask, parse_user_map, shared_users
from shared.config import ConfigError, load_settings
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


def test_none_of_the_executors_own_environment_reaches_the_job(monkeypatch):
    secrets = {"SCNS_ADMIN_TOKEN": "admin-secret", "NATS_CREDENTIALS": "/etc/scns/executor.creds",
               "DATABASE_URL": "postgresql://scns:pw@db/scns", "NATS_URL": "nats://x:4222", "HOME": "/root"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    env = job_environment(SPEC, 42, "n1", "nobody", "/nonexistent")
    assert not set(secrets.values()) & set(env.values()) and not {"SCNS_ADMIN_TOKEN", "NATS_CREDENTIALS"} & set(env)
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == ("/nonexistent", "nobody", "nobody")


def test_the_jobs_environment_is_exported_quoted_so_that_nothing_in_it_runs():
    environment = {"A": "it's $(touch pwned) `id` \\ ;x", "MULTI": "a\nb", "E": ""}
    script = environment_script(environment) + 'printf "%s|%s|%s" "$A" "$MULTI" "${E-unset}"'
    shown = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env={}, check=True).stdout
    assert shown == f"{environment['A']}|a\nb|"


def test_a_variable_a_shell_cannot_export_is_refused_not_dropped():
    with pytest.raises(UnexportableVariable, match="bad name;touch pwned"):
        environment_script({"GOOD": "x", "bad name;touch pwned": "x"})


def test_out_of_memory():
    assert outcome(-9, EndedBy.MEMORY, 9, 60, 64) == ("OUT_OF_MEMORY", "0:9", "Memory limit of 64M exceeded")
    assert outcome(-9, EndedBy.MEMORY, 9, 60, 2048).error_msg == "Memory limit of 2G exceeded"
    assert format_memory(1536) == "1536M"
    assert ended_by_memory(EndedBy.ITSELF, True) is EndedBy.MEMORY  # the kernel's OOM killer acted
    assert ended_by_memory(EndedBy.ITSELF, False) is EndedBy.ITSELF
    assert ended_by_memory(EndedBy.CANCEL, True) is EndedBy.CANCEL


def test_the_user_map_and_umask_settings():
    assert parse_user_map(["alpha:alice", " beta : bob "]) == {"alpha": "alice", "beta": "bob"}
    for bad in (["alpha"], ["alpha:"], [":alice"], ["alpha:root"]):
        with pytest.raises(JobUserSettingError):
            parse_user_map(bad)
    assert parse_umask("077") == 0o077 and parse_umask("0027") == 0o027
    for bad in ("8", "abc", "1777"):
        with pytest.raises(JobUserSettingError):
            parse_umask(bad)


@pytest.mark.parametrize("environ", [{"DEFAULT_JOB_USER": "root"}, {"JOB_USERS": "alpha:root"},
                                     {"JOB_USERS": "alpha"}, {"JOB_UMASK": "99"}])
def test_jobs_never_run_as_root_and_bad_user_settings_stop_the_executor(environ):
    with pytest.raises(ConfigError):
        node_config(load_settings({"JOB_WORK_BASE_DIR": "/tmp", **environ}))


def test_a_relative_state_folder_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = node_config(load_settings({"JOB_WORK_BASE_DIR": "/tmp", "EXECUTOR_STATE_DIR": "state"}))
    assert config.state_dir == tmp_path.resolve() / "state"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only a root executor looks the users up")
def test_a_user_with_uid_0_under_another_name_is_refused(monkeypatch):
    real = pwd.getpwnam
    monkeypatch.setattr(pwd, "getpwnam", lambda name: real("root") if name == "toor" else real(name))
    assert job_users(load_settings({"JOB_USERS": "alpha:daemon"})).for_account("alpha").uid == 1
    with pytest.raises(ConfigError, match="uid 0"):
        job_users(load_settings({"JOB_USERS": "alpha:nobody,beta:toor"}))


def test_the_users_shared_by_several_accounts_are_named():
    assert shared_users({}, "nobody") == {"nobody": ["*"]}  # every account: one user
    assert shared_users({"a": "alice", "b": "bob", "c": "nobody", "d": "bob"}, "nobody") == {
        "nobody": ["*", "c"], "bob": ["b", "d"]}


def test_the_containment_mode_is_checked():
    with pytest.raises(ConfigError, match="JOB_LIMITS"):
        limits(load_settings({"JOB_LIMITS": "sometimes"}), "n1")
    assert limits(load_settings({"JOB_LIMITS": "watchdog"}), "n1").mode == "watchdog"


def test_auto_warns_when_no_cgroup_can_be_made_and_a_watchdog_contains_the_jobs(tmp_path, caplog):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw,nosuid 0 0\n")
    with caplog.at_level(logging.WARNING, logger="services.executor.adapters.limits"):
        assert job_limits("auto", "n1", mounts=mounts).mode == "watchdog"
    assert [record.levelno for record in caplog.records] == [logging.WARNING] and "watchdog" in caplog.text


def test_cgroup_mounts_and_oom_counts_are_read_from_the_kernels_files():
    mounts = ("cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
              "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
              "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n"
              "cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n")
    assert cgroup_mounts(mounts) == ("/sys/fs/cgroup/unified",
                                     {"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"})
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == 2  # v1 memory.oom_control
    assert oom_kills("low 0\nhigh 0\nmax 5\noom 1\noom_kill 0\n") == 0  # v2 memory.events
    assert oom_kills("") == 0


def test_the_supervising_shell_joins_v1_cgroups_by_its_thread_and_a_v2_cgroup_as_a_process(tmp_path):
    """v1's `tasks` moves the writer's own thread without the kernel's lock that waits for an RCU
    grace period; v2 has no `tasks`, and moves a thread alone only within a threaded subtree.
    (Plain folders stand for the hierarchies: here memory and pids are v1's, so v2 has neither.)"""
    memory, pids, unified = (tmp_path / name for name in ("memory", "pids", "unified"))
    for base in (memory, pids, unified):
        base.mkdir()
    v1 = CgroupTree([memory, pids], 1).confine(RunIdentity("job-7-0-e"), 64)
    v2 = CgroupTree([unified], 2).confine(RunIdentity("job-7-0-e"), 64)
    assert v1.join_files == [str(memory / "job-7-0-e" / "tasks"), str(pids / "job-7-0-e" / "tasks")]
    assert v2.join_files == [str(unified / "job-7-0-e" / "cgroup.procs")]


def test_interpreter_from_shebang_as_the_kernel_reads_it_else_bash():
    assert command_for("#!/usr/bin/env python3\nprint(1)", "/s") == ["/usr/bin/env", "python3", "/s"]
    assert command_for("#! /bin/sh\n", "/s") == ["/bin/sh", "/s"]
    assert command_for("#!/bin/bash\t-e -u  \t\necho", "/s") == ["/bin/bash", "-e -u", "/s"]  # one argument
    assert command_for("#!/bin/bash", "/s") == ["/bin/bash", "/s"]
    assert command_for("#!/bin/bash\r\n", "/s") == ["/bin/bash\r", "/s"]  # (fails as the kernel's would)
    assert command_for("#!\necho hi", "/s") == ["/bin/bash", "/s"]
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


def test_a_status_cut_short_by_a_killed_shell_is_never_misread(tmp_path):
    status = tmp_path / "status"
    for cut in ("", "13", "137"):  # "137\n" cut short: the shell writes its status in place
        status.write_text(cut)
        assert read_status(status) is None and read_cpu_seconds(status) is None
    status.write_text("137\n0m0.010000s 0m0.000000s\n1m2.500000s 0m0.2")  # the times cut short
    assert read_status(status) == 137 and read_cpu_seconds(status) is None
