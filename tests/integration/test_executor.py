import asyncio
import dataclasses
import os
import signal

import msgspec
import psutil
import pytest

from services.executor.adapters.limits import ProcessWatchdog
from services.executor.adapters.process import read_status
from services.executor.adapters.users import JobUser, JobUsers
from services.executor.handlers import Executor, JournalEntry, NodeConfig
from shared.events import (
    JobAllocated,
    JobCancelRequested,
    JobFinished,
    JobLost,
    JobRequeued,
    JobStarted,
    JobSubmitted,
    executor_consumer,
)

from ..conftest import eventually
from .helpers import NOW, all_events, processes_with, spec

pytestmark = pytest.mark.integration


def job_users() -> JobUsers:
    """As the executor runs in production: as root, jobs run as `nobody`; otherwise as ourselves."""
    return JobUsers(default=JobUser.named("nobody")) if os.geteuid() == 0 else JobUsers()


def node_config(tmp_path, keep_jobs_on_stop: bool = False) -> NodeConfig:
    tmp_path.chmod(0o1777)  # a job root as the stack makes one: open to every job user, like /tmp
    return NodeConfig(name="n1", cpus=2, memory_mb=4096, partitions=["default"], arch="x86_64",
                      job_roots=[str(tmp_path.resolve())], state_dir=tmp_path / "state", kill_grace_s=1.0,
                      heartbeat_s=5.0, keep_jobs_on_stop=keep_jobs_on_stop, job_users=job_users())


@pytest.fixture
async def executor(event_log, tmp_path):
    executor = Executor(event_log, node_config(tmp_path))
    await executor.register()
    task = asyncio.create_task(executor.consume())
    yield executor
    task.cancel()
    await executor.stop_jobs()


async def submit_and_allocate(events, job_spec):
    job_id, _ = await events.publish(JobSubmitted(spec=job_spec, submitted_at=NOW))
    allocation = JobAllocated(job_id=job_id, node="n1", cpus=1, memory_mb=100, allocated_at=NOW)
    await events.publish(allocation)
    return job_id, allocation


async def finished(events, job_id):
    for _, event in await all_events(events):
        if isinstance(event, JobFinished) and event.job_id == job_id:
            return event
    return None


async def test_runs_a_job_and_reports_exit_code_and_output(event_log, executor, tmp_path):
    cwd = tmp_path / "job"
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), "#!/bin/sh\necho hello $SLURM_JOB_ID\nexit 3"))
    result = await eventually(lambda: finished(event_log, job_id), what="JobFinished")
    assert (result.state, result.exit_code, result.error_msg) == ("FAILED", "3:0", "Exited with code 3")
    assert (cwd / f"out-{job_id}").read_text() == f"hello {job_id}\n"
    assert result.cpu_seconds >= 0  # the supervising shell's record of its `times`


async def consumed_everything(events):
    info = await events.js.consumer_info("SCNS", executor_consumer("n1"))
    return info.num_pending == 0 and info.num_ack_pending == 0


async def job_events(events, job_id, kind):
    return [e for _, e in await all_events(events) if isinstance(e, kind) and e.job_id == job_id]


@pytest.mark.parametrize("while_running", [True, False], ids=["while-running", "after-the-end"])
async def test_a_redelivered_allocation_does_not_start_the_job_twice(event_log, executor, tmp_path, while_running):
    cwd = tmp_path / "job"
    script = "echo once >> runs.txt\n" + ("sleep 3021\n" if while_running else "")
    job_id, allocation = await submit_and_allocate(event_log, spec(str(cwd), script))
    if while_running:
        await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    else:
        await eventually(lambda: finished(event_log, job_id), what="JobFinished")
    await event_log.publish(allocation)  # the same allocation delivered again
    await eventually(lambda: consumed_everything(event_log), what="the executor reading the duplicate")
    assert len(await job_events(event_log, job_id, JobStarted)) == 1 and (cwd / "runs.txt").read_text() == "once\n"
    if while_running:
        await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
        assert (await eventually(lambda: finished(event_log, job_id), what="JobFinished")).state == "CANCELLED"
    assert len(await job_events(event_log, job_id, JobFinished)) == 1


async def test_a_batch_of_allocations_starts_each_job_once_even_one_delivered_twice(event_log, tmp_path):
    """Published before the executor consumes, so they come in one batch, handled job by job at once."""
    twice, allocation = await submit_and_allocate(event_log, spec(str(tmp_path / "twice"), "echo once >> runs.txt\n"))
    await event_log.publish(allocation)  # the same allocation delivered again, in the same batch
    others = [(await submit_and_allocate(event_log, spec(str(tmp_path / f"other{i}"), "echo once >> runs.txt\n")))[0]
              for i in range(40)]  # more than are handled at once
    executor = Executor(event_log, node_config(tmp_path))
    consuming = asyncio.create_task(executor.consume())
    try:
        for job_id in (twice, *others):
            assert (await eventually(lambda: finished(event_log, job_id), what="the end")).state == "COMPLETED"
        await eventually(lambda: consumed_everything(event_log), what="the executor reading the duplicate")
        assert len(await job_events(event_log, twice, JobStarted)) == 1
        assert (tmp_path / "twice" / "runs.txt").read_text() == "once\n"
        assert all((tmp_path / f"other{i}" / "runs.txt").read_text() == "once\n" for i in range(40))
    finally:
        consuming.cancel()
        await executor.stop_jobs()


async def test_a_deleted_consumer_is_made_again_and_runs_nothing_twice(event_log, executor, tmp_path):
    first, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "first"), "echo once >> runs.txt\n"))
    await eventually(lambda: finished(event_log, first), what="the first job's end")
    await event_log.js.delete_consumer("SCNS", executor_consumer("n1"))
    second, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "second"), "echo once >> runs.txt\n"))
    assert (await eventually(lambda: finished(event_log, second), what="the next job's end")).state == "COMPLETED"
    await eventually(lambda: consumed_everything(event_log), what="the new consumer read to the end")
    assert len(await job_events(event_log, first, JobStarted)) == 1
    assert (tmp_path / "first" / "runs.txt").read_text() == "once\n"


async def test_a_stopping_executor_ends_its_jobs_and_reports_them_before_it_goes(event_log, executor, tmp_path):
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 3022\n"))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    await executor.stop_jobs()
    (end,) = await job_events(event_log, job_id, JobFinished)  # there before stop_jobs returned
    assert (end.state, end.exit_code) == ("NODE_FAIL", "0:15") and not processes_with("3022")


async def test_a_job_with_requeue_lost_with_its_executor_is_queued_again_not_ended(event_log, executor, tmp_path):
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 3026\n", requeue=True))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    await executor.stop_jobs()  # the executor goes and takes its jobs with it: NODE_FAIL, for any other job
    ends = [d.event for d in await event_log.history(f"scns.job.{job_id}.end.>")]
    assert [(type(e).__name__, e.end_after) for e in ends] == [("JobRequeued", 0)] and not processes_with("3026")


async def test_a_failure_after_the_spawn_kills_the_job_before_reporting_it(event_log, executor, tmp_path,
                                                                          monkeypatch):
    real_publish = executor.events.publish_until_acked

    async def publish_failing_on_start(event, msg_id, headers=None):
        if isinstance(event, JobStarted):
            raise RuntimeError("injected: the start could not be recorded")
        return await real_publish(event, msg_id, headers)

    monkeypatch.setattr(executor.events, "publish_until_acked", publish_failing_on_start)
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 3023\n"))
    end = await eventually(lambda: finished(event_log, job_id), what="JobFinished")
    assert end.state == "FAILED" and "injected" in end.error_msg
    assert not processes_with("3023")


async def test_cancel_ends_the_whole_process_tree(event_log, executor, tmp_path):
    script = "sleep 3017 &\nsleep 3018\n"
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), script))

    async def started():
        return any(isinstance(e, JobStarted) and e.job_id == job_id for _, e in await all_events(event_log))

    await eventually(started, what="JobStarted")
    async def both_running():
        return len(await _sleepers()) == 2

    await eventually(both_running, what="the job's two processes")
    await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    result = await eventually(lambda: finished(event_log, job_id), what="JobFinished")
    assert (result.state, result.exit_code) == ("CANCELLED", "0:15")
    assert not await _sleepers()


async def test_cancel_requested_before_the_allocation_arrives_never_runs(event_log, executor, tmp_path):
    job_id, _ = await event_log.publish(JobSubmitted(spec=spec(str(tmp_path / "job"), "touch ran"), submitted_at=NOW))
    await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    await event_log.publish(JobAllocated(job_id=job_id, node="n1", cpus=1, memory_mb=1, allocated_at=NOW))
    result = await eventually(lambda: finished(event_log, job_id), what="JobFinished")
    assert (result.state, result.exit_code, result.started_at) == ("CANCELLED", "0:0", None)
    assert not (tmp_path / "job" / "ran").exists()


async def _sleepers():
    return processes_with("3017") + processes_with("3018")


async def test_a_failure_while_handling_is_retried_not_fatal(event_log, executor, tmp_path, monkeypatch):
    real_last_on, failures = executor.events.last_on, []

    async def flaky_last_on(subject):
        if not failures:
            failures.append(subject)
            raise TimeoutError("NATS did not answer in time")
        return await real_last_on(subject)

    monkeypatch.setattr(executor.events, "last_on", flaky_last_on)
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "echo retried"))
    result = await eventually(lambda: finished(event_log, job_id), what="JobFinished after a redelivery")
    assert failures and result.state == "COMPLETED"


async def test_a_requeued_run_is_killed_here_and_the_next_run_of_the_job_runs_here_once(event_log, executor,
                                                                                       tmp_path):
    """The node comes back after its job was requeued and placed on it again: the old run is
    killed, its end refused; the new run starts once the old one is gone, and ends the job."""
    cwd = tmp_path / "job"
    script = "echo run >> runs.txt\nif [ -e first ]; then exit 0; fi\ntouch first\nsleep 3025\n"
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), script, requeue=True))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="the first run to start")
    requeued = JobRequeued(job_id=job_id, node="n1", reason="gone", requeued_at=NOW)
    requeue_seq = await event_log.publish_end(requeued, f"JobRequeued:{job_id}", 0)
    # The next run, allocated at once: it must wait for the first run to be ended here.
    await event_log.publish(JobAllocated(job_id=job_id, node="n1", cpus=1, memory_mb=100, allocated_at=NOW,
                                         end_after=requeue_seq))
    end = await eventually(lambda: finished(event_log, job_id), what="the job's end")
    assert (end.state, end.exit_code) == ("COMPLETED", "0:0") and not processes_with("3025")
    assert (cwd / "runs.txt").read_text() == "run\nrun\n"
    ends = [d.event for d in await event_log.history(f"scns.job.{job_id}.end.>")]
    assert [type(e).__name__ for e in ends] == ["JobRequeued", "JobFinished"]
    assert len(await job_events(event_log, job_id, JobStarted)) == 2


async def test_a_job_declared_lost_while_its_node_was_away_is_killed_and_not_reported_again(event_log, executor,
                                                                                          tmp_path):
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 3024\n"))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    await event_log.publish_end(JobLost(job_id=job_id, node="n1", reason="gone", lost_at=NOW), f"JobLost:{job_id}")
    await eventually(lambda: not processes_with("3024"), what="the lost job's process to be killed")
    await eventually(lambda: job_id not in executor.running, what="the executor to let the job go")
    ends = [d.event for d in await event_log.history(f"scns.job.{job_id}.end.>")]
    assert [type(e).__name__ for e in ends] == ["JobLost"]


@pytest.mark.parametrize("pid_journaled", [True, False], ids=["pid-journaled", "stopped-right-after-spawn"])
@pytest.mark.parametrize("ends_while_away", [False, True], ids=["still-running", "ended-while-away"])
async def test_a_restarted_executor_reattaches_and_reports_the_true_end(event_log, tmp_path, ends_while_away,
                                                                        pid_journaled):
    """A job survives a restart of its executor: the next one takes it over and reports how it
    really ended, whether it still runs then or ended while no executor watched — even when the
    executor stopped between spawning it and journaling its PID."""
    first = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    consuming = asyncio.create_task(first.consume())
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 1.5\necho done\nexit 3\n"))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    consuming.cancel()
    await first.stop_jobs()  # the executor goes; the job stays
    assert await job_events(event_log, job_id, JobFinished) == []
    if not pid_journaled:
        first._write_journal(JournalEntry(job_id=job_id))  # as written just before the spawn
    if ends_while_away:
        await eventually(lambda: read_status(tmp_path / "state" / "status" / str(job_id)) is not None,
                         what="the job to end")
    scripts = tmp_path / "state" / "scripts"
    assert not scripts.exists()  # the script and environment are held in memory
    scripts.mkdir()
    (scripts / f"{job_id}.sh").write_text("sleep 1.5\n")  # as an older executor left them
    second = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    await second.recover()
    try:
        assert not scripts.exists()
        end = await eventually(lambda: finished(event_log, job_id), what="the true end")
        assert (end.state, end.exit_code) == ("FAILED", "3:0")
        assert all(started.pid > 0 for started in await job_events(event_log, job_id, JobStarted))
        assert (tmp_path / "job" / f"out-{job_id}").read_text() == "done\n"
        assert len(await job_events(event_log, job_id, JobFinished)) == 1
    finally:
        await second.stop_jobs()


@pytest.mark.parametrize("left", ["empty", "cut", "legacy-started"])
async def test_a_run_whose_shell_died_unrecorded_while_no_executor_watched_is_lost_not_run_again(event_log, tmp_path,
                                                                                                 left):
    """The shell was killed after it started the job, before its status was whole (or, from an older
    executor, with only its ".started" marker): the end is lost (NODE_FAIL), never misread, never run again."""
    cwd = tmp_path / "job"
    first = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    consuming = asyncio.create_task(first.consume())
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), "echo run >> runs.txt\nsleep 3042\n"))
    (started,) = await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    await eventually(lambda: (cwd / "runs.txt").exists(), what="the job to run")
    consuming.cancel()
    await first.stop_jobs()
    os.killpg(started.pid, signal.SIGKILL)  # the shell and the job, at once
    await eventually(lambda: not processes_with("3042"), what="the job to be killed")
    status = tmp_path / "state" / "status" / str(job_id)
    if left == "cut":
        status.write_text("13")  # "137\n" cut short: never to be read as exit code 13
    elif left == "legacy-started":
        status.unlink()
        status.with_name(f"{job_id}.started").touch()
    second = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    await second.recover()
    try:
        end = await eventually(lambda: finished(event_log, job_id), what="the end")
        assert (end.state, end.exit_code) == ("NODE_FAIL", "0:9")
        assert (cwd / "runs.txt").read_text() == "run\n" and job_id not in second.running
        assert not any(status.parent.iterdir())  # its files went with it
    finally:
        await second.stop_jobs()


async def test_a_run_journaled_but_never_spawned_before_its_executor_died_runs_once_now(event_log, tmp_path):
    cwd = tmp_path / "job"
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), "echo once >> runs.txt\n"))
    executor = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    executor._write_journal(JournalEntry(job_id=job_id))  # then the executor died, before the spawn
    await executor.recover()
    try:
        end = await eventually(lambda: finished(event_log, job_id), what="the job's end")
        assert end.state == "COMPLETED" and (cwd / "runs.txt").read_text() == "once\n"
    finally:
        await executor.stop_jobs()


def test_the_last_whole_journal_entry_counts_and_one_cut_short_never_does(event_log, tmp_path):
    executor = Executor(event_log, node_config(tmp_path))
    journal = tmp_path / "state" / "jobs" / "7.json"
    journal.write_bytes(msgspec.json.encode(JournalEntry(job_id=7, end_after=3)))  # an older executor's: no newline
    assert executor._read_journal(7) == JournalEntry(job_id=7, end_after=3)
    journal.unlink()
    executor._write_journal(JournalEntry(job_id=7, end_after=3))
    executor._write_journal(JournalEntry(job_id=7, pid=4242, end_after=3), durable=False)
    assert executor._read_journal(7).pid == 4242
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-5])  # the PID entry cut short by a crash: the one before it counts
    assert executor._read_journal(7) == JournalEntry(job_id=7, end_after=3)
    journal.write_bytes(whole[:20])  # the first entry cut short: there is none
    assert executor._read_journal(7) is None and executor._run_here(7) is None
    executor._write_journal(JournalEntry(job_id=7, end_after=5))  # the allocation again: after the cut one
    assert executor._read_journal(7) == JournalEntry(job_id=7, end_after=5)


async def test_a_run_whose_first_journal_entry_was_cut_short_runs_once_when_its_allocation_comes_again(event_log,
                                                                                                      tmp_path):
    cwd = tmp_path / "job"
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), "echo once >> runs.txt\n"))
    executor = Executor(event_log, node_config(tmp_path))
    journal = tmp_path / "state" / "jobs" / f"{job_id}.json"
    journal.write_bytes(msgspec.json.encode(JournalEntry(job_id=job_id))[:15])  # the executor died writing it
    await executor.recover()
    assert not journal.exists()
    journal.write_bytes(msgspec.json.encode(JournalEntry(job_id=job_id))[:15])  # or it is read when the allocation comes
    consuming = asyncio.create_task(executor.consume())
    try:
        end = await eventually(lambda: finished(event_log, job_id), what="the job's end")
        assert end.state == "COMPLETED" and (cwd / "runs.txt").read_text() == "once\n"
        assert len(await job_events(event_log, job_id, JobStarted)) == 1
    finally:
        consuming.cancel()
        await executor.stop_jobs()


async def test_a_run_declared_lost_meanwhile_is_killed_even_if_its_pid_was_never_journaled(event_log, tmp_path):
    first = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    consuming = asyncio.create_task(first.consume())
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 3033\n"))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    consuming.cancel()
    await first.stop_jobs()
    first._write_journal(JournalEntry(job_id=job_id))  # as written just before the spawn
    await event_log.publish_end(JobLost(job_id=job_id, node="n1", reason="gone", lost_at=NOW), f"JobLost:{job_id}")
    second = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    await second.recover()
    assert not processes_with("3033") and job_id not in second.running
    ends = [d.event for d in await event_log.history(f"scns.job.{job_id}.end.>")]
    assert [type(e).__name__ for e in ends] == ["JobLost"]


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_reattached_job_can_still_be_cancelled_or_time_out(event_log, tmp_path, how):
    first = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    consuming = asyncio.create_task(first.consume())
    limit = 3 if how == "timeout" else 0
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "job"), "sleep 3091\n", time_limit_s=limit))
    await eventually(lambda: job_events(event_log, job_id, JobStarted), what="JobStarted")
    consuming.cancel()
    await first.stop_jobs()
    second = Executor(event_log, node_config(tmp_path, keep_jobs_on_stop=True))
    await second.recover()
    consuming = asyncio.create_task(second.consume())
    try:
        if how == "cancel":
            await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
        end = await eventually(lambda: finished(event_log, job_id), what="the end")
        assert (end.state, end.exit_code) == ("CANCELLED" if how == "cancel" else "TIMEOUT", "0:15")
        assert not processes_with("3091")
    finally:
        consuming.cancel()
        await second.stop_jobs()


async def test_a_cancelled_job_gets_its_grace_period_to_clean_up(event_log, executor, tmp_path):
    cwd = tmp_path / "job"
    script = "trap 'sleep 0.3; echo cleaned > cleaned.txt; exit 0' TERM\nsleep 3092 &\nwait\n"
    job_id, _ = await submit_and_allocate(event_log, spec(str(cwd), script))
    await eventually(lambda: processes_with("3092"), what="the job's process")
    await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    end = await eventually(lambda: finished(event_log, job_id), what="the end")
    assert (end.state, end.exit_code) == ("CANCELLED", "0:15")
    assert (cwd / "cleaned.txt").read_text() == "cleaned\n"  # not cut short by an early SIGKILL


async def test_a_job_of_hundreds_of_processes_under_the_watchdog_slows_nothing_and_leaves_nothing(event_log, executor,
                                                                                                   tmp_path):
    many = 800
    # Daemons: out of the job's process group and tree, so only the watchdog finds them to kill them.
    script = f"for i in $(seq {many}); do (setsid sleep 3081 &); done\nsleep 3082\n"
    # (memory: the watchdog sums each process's resident memory, shared pages included)
    big_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "many"), script, memory_mb=8192))
    await eventually(lambda: len(alive_with("3081")) >= many, what=f"{many} processes of the job")
    small_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "small"), "echo small"))
    # Generous (it takes a fraction of a second), yet shorter than one scan of a watchdog that blocks the executor
    small = await eventually(lambda: finished(event_log, small_id), timeout=5.0, what="another job, run meanwhile")
    assert small.state == "COMPLETED"
    await event_log.publish(JobCancelRequested(job_id=big_id, requested_at=NOW))
    big = await eventually(lambda: finished(event_log, big_id), what="the end of the big job")
    assert big.state == "CANCELLED" and not alive_with("3081")  # every one killed before the end was reported


def alive_with(argument: str) -> list[psutil.Process]:
    return [process for process in psutil.process_iter(["cmdline", "status"])
            if argument in (process.info["cmdline"] or []) and process.info["status"] != psutil.STATUS_ZOMBIE]


async def test_a_job_of_the_executors_own_user_is_held_to_the_process_limit_too(event_log, tmp_path):
    executor = Executor(event_log, dataclasses.replace(node_config(tmp_path), job_users=JobUsers()),
                        limits=ProcessWatchdog(pids_max=300))
    task = asyncio.create_task(executor.consume())
    try:
        job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "own"), "ulimit -u"))
        assert (await eventually(lambda: finished(event_log, job_id), what="the end")).state == "COMPLETED"
        assert (tmp_path / "own" / f"out-{job_id}").read_text() == "300\n"
    finally:
        task.cancel()
        await executor.stop_jobs()


async def test_a_job_whose_environment_names_an_unexportable_variable_fails(event_log, executor, tmp_path):
    job_id, _ = await submit_and_allocate(event_log, spec(str(tmp_path / "env"), "true", environment={"BAD-NAME": "x"}))
    end = await eventually(lambda: finished(event_log, job_id), what="the end")
    assert end.state == "FAILED" and "BAD-NAME" in end.error_msg
