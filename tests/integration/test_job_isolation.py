"""Jobs run as their account's user, cannot reach another account's files or the executor's own,
and are held to their memory and process limits, in both containment modes (cgroup, watchdog).

The accounts: `alice` runs as `daemon` (uid 1), every other account (here `bob`) as `nobody`."""

import asyncio
import os
import pwd
import stat
import subprocess
from pathlib import Path

import msgspec
import psutil
import pytest

from services.executor.adapters.limits import (
    PIDS_MAX as DEFAULT_PIDS_MAX,
    RUN_MARKER_VARIABLE,
    CgroupTree,
    MiB,
    ProcessWatchdog,
    RunIdentity,
    WatchedRun,
)
from services.executor.adapters.users import JobUser, JobUsers
from services.executor.core.lifecycle import CLEAN_PATH
from services.executor.handlers import Executor, NodeConfig
from shared.events import LOGS_SUBJECT, JobCancelRequested, JobStarted
from shared.rpc import LogReply, LogRequest

from ..conftest import eventually
from .helpers import NOW, spec
from .test_executor import finished, job_events, submit_and_allocate

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: only a root executor runs jobs as other users")]

DAEMON, NOBODY = pwd.getpwnam("daemon").pw_uid, pwd.getpwnam("nobody").pw_uid
PIDS_MAX = 64  # small, for the fork bomb (the jobs run as `daemon`, whose processes they alone are)
BOMB_BACKSTOP = 512  # the fork bomb's own RLIMIT_NPROC, should the cap under test fail


def cgroups_or_skip(pids_max: int = DEFAULT_PIDS_MAX) -> CgroupTree:
    tree = CgroupTree.on_this_machine("n1", Path("/proc/mounts"), pids_max=pids_max)
    if tree is None:
        pytest.skip("cgroups are not usable here: the executor needs cgroup v2 with memory and pids, "
                    "or v1's memory and pids hierarchies, writable")
    return tree


@pytest.fixture
def jobs_root(tmp_path) -> Path:
    """A job root as the stack makes one: open to every job user, like /tmp (its parents are not)."""
    root = tmp_path / "jobs"
    root.mkdir(mode=0o1777)
    root.chmod(0o1777)
    return root


def node_config(tmp_path, jobs_root, keep_jobs_on_stop: bool = False) -> NodeConfig:
    users = JobUsers(default=JobUser.named("nobody"), by_account={"alice": JobUser.named("daemon")})
    return NodeConfig(name="n1", cpus=2, memory_mb=4096, partitions=["default"], arch="x86_64",
                      job_roots=[str(jobs_root)], state_dir=tmp_path / "state", kill_grace_s=1.0, heartbeat_s=5.0,
                      keep_jobs_on_stop=keep_jobs_on_stop, job_users=users)


def limits_of(mode: str, pids_max: int = DEFAULT_PIDS_MAX):
    return cgroups_or_skip(pids_max) if mode == "cgroup" else ProcessWatchdog(pids_max)


@pytest.fixture(params=["cgroup", "watchdog"])
def limits(request):
    return limits_of(request.param)


@pytest.fixture(params=["cgroup", "watchdog"])
def few_processes(request):
    """Limits with a small process cap: the fork bomb's only (under the watchdog it is the user's
    RLIMIT_NPROC, which the killed bomb's processes still count until they are reaped)."""
    return limits_of(request.param, PIDS_MAX)


async def started_executor(event_log, config: NodeConfig, limits=None) -> tuple[Executor, list[asyncio.Task]]:
    executor = Executor(event_log, config, limits=limits or ProcessWatchdog())
    await executor.recover()
    return executor, [asyncio.create_task(executor.consume()), asyncio.create_task(executor.serve_logs())]


@pytest.fixture
async def executor(event_log, tmp_path, jobs_root, request):
    limits = next((request.getfixturevalue(name) for name in ("limits", "few_processes") if name in request.fixturenames),
                  None)
    executor, tasks = await started_executor(event_log, node_config(tmp_path, jobs_root), limits)
    yield executor
    await stopped(executor, tasks)


async def stopped(executor: Executor, tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # unsubscribed before the connection closes
    await executor.stop_jobs()


async def run_job(event_log, cwd: Path, script: str, **fields):
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), script, **fields))
    return job_id, await eventually(lambda: finished(event_log, job_id), what=f"the end of job {job_id}")


def processes_of_run(executor: Executor, job_id: int) -> list[psutil.Process]:
    """The live processes of the job's runs, by their environment (as root, every one is readable)."""
    found = []
    for process in psutil.process_iter():
        try:
            environment = process.environ()
            if (RUN_MARKER_VARIABLE in environment and environment.get("SCNS_JOB_ID") == str(job_id)
                    and process.status() != psutil.STATUS_ZOMBIE):
                found.append(process)
        except psutil.Error:
            pass
    return found


def with_argument(argument: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline", "status"])
            if argument in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]


# ---- users, the executor's state, the environment ----------------------------------------------

async def test_a_job_runs_as_its_accounts_user_and_cannot_write_the_executors_state(event_log, executor, jobs_root,
                                                                                   tmp_path, monkeypatch):
    monkeypatch.setenv("SCNS_ADMIN_TOKEN", "admin-secret-4711")  # the executor's environment: not the job's
    state = tmp_path / "state"
    script = f"""id -u
umask
for target in "{state}/jobs/$SLURM_JOB_ID.json" "{state}/status/$SLURM_JOB_ID" "{state}/status/$SLURM_JOB_ID.started" \\
              "{state}/scripts/$SLURM_JOB_ID.sh" "{state}/planted" "$0"; do
  if (echo pwned >> "$target") 2>/dev/null; then echo "wrote $target"; fi
done
env >&2
"""
    cwd = jobs_root / "alice" / "job"
    job_id, end = await run_job(event_log, cwd, script, account="alice")
    assert end.state == "COMPLETED"
    assert (cwd / f"out-{job_id}").read_text() == f"{DAEMON}\n0077\n"  # not root, its umask, nothing written
    assert "admin-secret-4711" not in (cwd / f"err-{job_id}").read_text()
    assert not (state / "planted").exists() and stat.S_IMODE(state.stat().st_mode) == 0o700
    for path, mode in ((cwd, 0o700), (cwd / f"out-{job_id}", 0o600), (cwd / f"err-{job_id}", 0o600)):
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (DAEMON, mode), path
    _, bobs = await run_job(event_log, jobs_root / "bob", "id -u", account="bob", stdout="out", stderr="out")
    assert bobs.state == "COMPLETED" and (jobs_root / "bob" / "out").read_text() == f"{NOBODY}\n"


async def test_the_supervising_shell_stays_root_without_the_jobs_variables_or_folder(event_log, executor, jobs_root):
    environment = {"LD_LIBRARY_PATH": "/jobs/libs", "PATH": "/nowhere:/usr/bin:/bin"}
    cwd = jobs_root / "bob"
    script = 'echo "$LD_LIBRARY_PATH $PATH"\npwd\necho "$PWD"\nsleep 3061\n'
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), script, account="bob", environment=environment))
    (started,) = await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    await eventually(lambda: with_argument("3061"), what="the job's sleep")
    supervisor = psutil.Process(started.pid)
    assert supervisor.uids().real == 0 and supervisor.environ()["PATH"] == CLEAN_PATH
    # Root works in "/": a relative path of its never meets a symlink the job made in its folder.
    assert supervisor.cwd() == "/" and {process.cwd() for process in with_argument("3061")} == {str(cwd)}
    assert "LD_LIBRARY_PATH" not in supervisor.environ()
    assert {process.uids().real for process in with_argument("3061")} == {NOBODY}
    await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    await eventually(lambda: finished(event_log, job_id), what="the end")
    assert (cwd / f"out-{job_id}").read_text() == f"/jobs/libs /nowhere:/usr/bin:/bin\n{cwd}\n{cwd}\n"  # the job has them


# ---- paths: symlinks, escapes, another account's files ------------------------------------------

@pytest.fixture
def alices_output(jobs_root) -> Path:
    """An output file of another account's job: daemon's, mode 600."""
    folder = jobs_root / "alice"
    folder.mkdir(mode=0o700)
    os.chown(folder, DAEMON, DAEMON)
    output = folder / "out.txt"
    output.write_text("alice-secret\n")
    output.chmod(0o600)
    os.chown(output, DAEMON, DAEMON)
    return output


def planted(link: Path, target: Path) -> None:
    """A symlink bob's earlier job made (as nobody)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.chown(link.parent, NOBODY, NOBODY)
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)


@pytest.mark.parametrize("attack", ["output-is-a-symlink", "folder-on-the-way-is-a-symlink", "cwd-is-a-symlink",
                                    "dot-dot", "absolute"])
async def test_a_path_through_a_symlink_or_out_of_the_roots_fails_the_job_and_touches_nothing(
        event_log, executor, jobs_root, alices_output, attack):
    bobs = jobs_root / "bob"
    cwd, stdout, named = bobs, "out.txt", "out.txt"
    if attack == "output-is-a-symlink":
        planted(bobs / "out.txt", alices_output)
    elif attack == "folder-on-the-way-is-a-symlink":
        planted(bobs / "logs", alices_output.parent)
        stdout = named = "logs/out.txt"
    elif attack == "cwd-is-a-symlink":
        planted(bobs / "work", alices_output.parent)
        cwd = named = bobs / "work"
    elif attack == "dot-dot":
        stdout = named = "../../../../../etc/scns-escape"
    else:
        stdout = named = "/etc/scns-escape"
    job_id, end = await run_job(event_log, cwd, "echo bob-was-here", account="bob", stdout=stdout, stderr=stdout)
    assert end.state == "FAILED" and end.error_msg.startswith("Could not start the job:")
    assert str(named).rsplit("/", 1)[-1] in end.error_msg or "outside the job roots" in end.error_msg
    assert alices_output.read_text() == "alice-secret\n" and alices_output.stat().st_uid == DAEMON
    assert not Path("/etc/scns-escape").exists()


async def ask_logs(event_log, request: LogRequest | dict) -> LogReply:
    reply = await event_log.nc.request(LOGS_SUBJECT.format(node="n1"), msgspec.json.encode(request), timeout=5)
    return msgspec.json.decode(reply.data, type=LogReply)


@pytest.mark.parametrize("swap", ["its-output-file", "a-folder-on-the-way"])
async def test_the_query_route_never_shows_another_accounts_output(event_log, executor, jobs_root, swap):
    alices_cwd = jobs_root / "alice"
    alice_id, alice_end = await run_job(event_log, alices_cwd, "echo alice-secret", account="alice",
                                        stdout="logs/out.txt", stderr="logs/out.txt")
    alices_output = alices_cwd / "logs" / "out.txt"
    assert alice_end.state == "COMPLETED"
    assert (await ask_logs(event_log, LogRequest(job_id=alice_id))).stdout == "alice-secret\n"  # the route works
    # bob's job puts a symlink to alice's output where its own output was: the executor (root) must not follow it.
    if swap == "its-output-file":
        script = f"rm logs/out.txt; ln -s {alices_output} logs/out.txt"
    else:
        script = f"mv logs logs.old; ln -s {alices_output.parent} logs"
    bob_id, bob_end = await run_job(event_log, jobs_root / "bob", script, account="bob", stdout="logs/out.txt",
                                    stderr="logs/out.txt")
    assert bob_end.state == "COMPLETED"
    reply = await ask_logs(event_log, LogRequest(job_id=bob_id))
    assert "alice-secret" not in reply.stdout + reply.stderr
    # Paths of the caller's choosing are not read (a request without a job, as an old gateway sends).
    by_path = await ask_logs(event_log, {"stdout": str(alices_output), "stderr": "/etc/shadow"})
    assert by_path.error and not by_path.stdout and not by_path.stderr
    # Nor is a request answered whose reply is not an inbox (a JetStream delivery aimed at the
    # subject, or an answer aimed elsewhere): answered in order, it would come before this one's.
    aimed = await event_log.nc.subscribe("aimed.answers")
    await event_log.nc.publish(LOGS_SUBJECT.format(node="n1"), msgspec.json.encode(LogRequest(job_id=alice_id)),
                               reply="aimed.answers")
    assert (await ask_logs(event_log, LogRequest(job_id=alice_id))).stdout == "alice-secret\n"
    await event_log.nc.flush()
    assert aimed.pending_msgs == 0


# ---- memory and processes, in both containment modes ---------------------------------------------

async def test_a_job_past_its_memory_ends_out_of_memory(event_log, executor, jobs_root, limits):
    allocate = "/usr/bin/python3 -c \"import time; b = b'x' * ({} * 1024 * 1024); time.sleep(30)\""
    job_id, end = await run_job(event_log, jobs_root / "big", allocate.format(256), account="alice", memory_mb=64)
    assert (end.state, end.exit_code, end.error_msg) == ("OUT_OF_MEMORY", "0:9", "Memory limit of 64M exceeded")
    assert not processes_of_run(executor, job_id)
    _, small = await run_job(event_log, jobs_root / "small", allocate.format(8).replace("30", "0.5"), account="alice",
                             memory_mb=64)
    assert small.state == "COMPLETED"  # under its limit: not killed


async def test_the_most_memory_a_job_used_is_reported_with_its_end(event_log, executor, jobs_root, limits):
    """Its cgroup's high-water mark, or the watchdog's largest total at a poll (the job holds its
    memory for a second: long enough to be polled)."""
    hold = "/usr/bin/python3 -c \"import time; b = b'x' * (48 * 1024 * 1024); time.sleep(1)\""
    _, end = await run_job(event_log, jobs_root / "peak", hold, account="alice", memory_mb=256)
    assert end.state == "COMPLETED" and 48 * 1024 <= end.peak_memory_kb < 256 * 1024
    assert end.cpu_seconds >= 0


async def test_a_fork_bomb_is_contained_and_every_process_of_it_is_killed(event_log, executor, jobs_root,
                                                                         few_processes):
    # A backstop of the test's own, well above the cap under test: a containment that fails lets
    # the bomb fail the test at this many processes, not fill the machine's process table.
    limit = '"$(ulimit -u)"'
    backstop = f"[ {limit} = unlimited ] || [ {limit} -gt {BOMB_BACKSTOP} ] && ulimit -u {BOMB_BACKSTOP}\n"
    script = backstop + "bomb() { bomb | bomb & }\nbomb\nsleep 3071\n"
    job_id, _ = await submit_and_allocate(event_log, spec(str(jobs_root / "bomb"), script, account="alice",
                                                          time_limit_s=4))
    most = 0
    while not await finished(event_log, job_id):
        most = max(most, len(processes_of_run(executor, job_id)))
        await asyncio.sleep(0.1)
    assert PIDS_MAX / 2 < most <= PIDS_MAX + 2  # it forked, up to the limit (+ prlimit/setpriv racing), no further
    end = await finished(event_log, job_id)
    assert end.state == "TIMEOUT"
    assert not processes_of_run(executor, job_id)  # killed before the end was reported


async def test_a_double_forked_daemon_is_killed_with_its_job(event_log, executor, jobs_root, limits):
    script = "(setsid sleep 3072 &)\n"
    if isinstance(limits, CgroupTree):  # without the run's id in its environment: only a cgroup finds it
        script += "(env -i setsid sleep 3073 &)\n"
    script += "echo daemons started\n"
    await eventually(lambda: not with_argument("3072") and not with_argument("3073"), what="no earlier daemon")
    job_id, end = await run_job(event_log, jobs_root / "daemon", script, account="alice")
    assert end.state == "COMPLETED"
    assert not with_argument("3072") and not with_argument("3073")  # gone before the end was reported


async def test_the_watchdog_counts_a_process_with_the_runs_secret_only_if_it_is_the_runs_users(event_log, executor,
                                                                                                 jobs_root):
    job_id, _ = await submit_and_allocate(event_log, spec(str(jobs_root / "victim"), "sleep 3093\n", account="alice"))
    (sleep,) = await eventually(lambda: with_argument("3093"), what="the job's sleep")
    marker = sleep.environ()[RUN_MARKER_VARIABLE]  # read as root: the job's user alone could, otherwise
    journaled = executor._read_journal(job_id)
    assert journaled.marker == marker and len(marker) == 32  # a restarted executor finds the run's processes again
    await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    await eventually(lambda: finished(event_log, job_id), what="the end")

    def carrying_the_marker(uid: int) -> subprocess.Popen:
        return subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "3094"],
                                env={"PATH": CLEAN_PATH, RUN_MARKER_VARIABLE: marker})

    impostor, own = carrying_the_marker(NOBODY), carrying_the_marker(DAEMON)
    try:
        await eventually(lambda: len(with_argument("3094")) == 2, what="both processes")
        found = {process.pid for process in WatchedRun(RunIdentity("victim", marker, DAEMON), MiB).scan()}
        assert own.pid in found and impostor.pid not in found  # another account's process is not counted
    finally:
        for process in (impostor, own):
            process.kill()
            process.wait()


async def test_a_restarted_executor_reattaches_to_the_cgroup_and_removes_those_of_ended_runs(event_log, tmp_path,
                                                                                            jobs_root):
    cgroups = cgroups_or_skip()
    config = node_config(tmp_path, jobs_root, keep_jobs_on_stop=True)
    first, tasks = await started_executor(event_log, config, cgroups)
    job_id, _ = await submit_and_allocate(event_log, spec(str(jobs_root / "long"), "(setsid sleep 3074 &)\nsleep 3075\n",
                                                          account="alice"))
    await eventually(lambda: with_argument("3074") and with_argument("3075"), what="the job and its daemon")
    await stopped(first, tasks)  # the executor goes; the job stays
    leftover = [base / f"job-999-0-{first.executor_id}" for base in cgroups.bases]
    for folder in leftover:
        folder.mkdir()  # of a run that ended while no executor watched
    second, tasks = await started_executor(event_log, config, cgroups)
    try:
        assert not any(folder.exists() for folder in leftover)
        await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
        end = await eventually(lambda: finished(event_log, job_id), what="the end")
        assert end.state == "CANCELLED" and not with_argument("3074") and not with_argument("3075")
        assert not any((base / f"job-{job_id}-0-{second.executor_id}").exists() for base in cgroups.bases)
    finally:
        await stopped(second, tasks)


async def test_under_a_cgroup_the_jobs_user_keeps_its_process_limit(event_log, tmp_path, jobs_root):
    # pids.max counts the run's processes; RLIMIT_NPROC would count every process of the user on
    # the machine (other jobs, daemons of a shared user like `nobody`) and fail the job's forks.
    executor, tasks = await started_executor(event_log, node_config(tmp_path, jobs_root), cgroups_or_skip())
    try:
        _, end = await run_job(event_log, jobs_root / "ulimit", "ulimit -u", account="alice", stdout="out",
                               stderr="out")
        assert end.state == "COMPLETED" and (jobs_root / "ulimit" / "out").read_text().strip() != str(PIDS_MAX)
    finally:
        await stopped(executor, tasks)
