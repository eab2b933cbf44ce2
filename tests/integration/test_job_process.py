"""A job's supervising shell: it joins its confinement itself; a restarted executor finds it by its
status file; it is signalled by its pidfd and its process group only while it has not exited (once
it is gone, its PID and group id may be another process's, and only the confinement, which knows
the run's processes, signals them)."""

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from services.executor.adapters.process import JobProcess
from services.executor.core.lifecycle import SUPERVISOR_ENVIRONMENT

pytestmark = pytest.mark.integration


class RecordingConfinement:
    join_files: list[str] = []

    def __init__(self) -> None:
        self.signals: list[int] = []

    def track(self, pid: int) -> None:
        pass

    async def signal(self, signum: int) -> None:
        self.signals.append(signum)

    async def over_memory(self) -> None:
        await asyncio.get_running_loop().create_future()

    def memory_exceeded(self) -> bool:
        return False

    async def release(self) -> None:
        pass


@pytest.fixture
def signals_by_pid(monkeypatch) -> list[tuple]:
    """Every signal sent by PID or process group from now on (recorded, not sent)."""
    sent: list[tuple] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append(("kill", pid, signum)))
    monkeypatch.setattr(os, "killpg", lambda pgid, signum: sent.append(("killpg", pgid, signum)))
    return sent


async def spawned(tmp_path, confinement) -> JobProcess:
    with open(os.devnull, "wb") as devnull:
        return await JobProcess.spawn(["true"], SUPERVISOR_ENVIRONMENT, devnull.fileno(), devnull.fileno(),
                                      tmp_path / "status", 0o077, confinement)


def attached(tmp_path, confinement) -> JobProcess:
    """A shell an earlier executor left, ended and reaped (by its parent, here us) meanwhile."""
    shell = subprocess.Popen(["sleep", "0"])
    process = JobProcess.attach(shell.pid, psutil.Process(shell.pid).create_time(), tmp_path / "status", confinement)
    assert process is not None
    shell.wait()
    return process


@pytest.mark.parametrize("started", ["spawned", "attached"])
async def test_once_the_shell_is_gone_no_signal_goes_by_its_pid(tmp_path, signals_by_pid, started):
    confinement = RecordingConfinement()
    process = await spawned(tmp_path, confinement) if started == "spawned" else attached(tmp_path, confinement)
    await process.wait()
    await process.kill()
    await process.terminate(grace_s=0.1)
    assert signals_by_pid == []  # the PID may be another process's by now
    assert confinement.signals == [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]  # the run's processes still are


async def test_a_running_shell_is_signalled_by_its_pidfd(tmp_path):
    confinement = RecordingConfinement()
    with open(os.devnull, "wb") as devnull:
        process = await JobProcess.spawn(["sleep", "3101"], SUPERVISOR_ENVIRONMENT, devnull.fileno(),
                                         devnull.fileno(), tmp_path / "status", 0o077, confinement)
    await process.kill()
    assert process.returncode == -signal.SIGKILL and process.pidfd is None


async def test_the_shell_joins_by_writing_0_itself_to_each_join_file(tmp_path):
    """"0" names the writer: the kernel then moves the shell's own thread without the lock that
    waits for an RCU grace period (cgroup v1's `tasks`); a PID would take that lock again."""
    confinement = RecordingConfinement()
    confinement.join_files = [str(tmp_path / "memory-tasks"), str(tmp_path / "pids-tasks")]
    process = await spawned(tmp_path, confinement)
    assert await process.wait() == 0
    assert [Path(file).read_text() for file in confinement.join_files] == ["0\n", "0\n"]


def test_a_shell_whose_pid_was_never_journaled_is_found_by_its_status_file_and_user_not_its_script(tmp_path):
    """An executor stopped just after the spawn is followed by one of another version, whose
    supervising script may differ: the status file, the job's own, names the shell."""
    status = tmp_path / "status"
    shells = []
    try:
        # Shells that wait on their input: they stay shells, with no child to outlive them.
        if os.geteuid() == 0:  # a job's user cannot make its own process pass for the shell
            shells.append(subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                            "/bin/sh", "-c", "read -r line", str(status)], stdin=subprocess.PIPE))
        shells.append(subprocess.Popen(["/bin/sh", "-c", ": an earlier script; read -r line", str(status)],
                                       stdin=subprocess.PIPE))
        earlier = shells[-1]
        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:  # (until each shell has exec'd)
            found = JobProcess.find(status, RecordingConfinement())
            time.sleep(0.01)
        assert found is not None and found.pid == earlier.pid
        assert JobProcess.find(tmp_path / "another-status", RecordingConfinement()) is None
    finally:
        for shell in shells:
            shell.kill()
            shell.wait()
