"""Job processes on this node: spawn in their own session, as the job's user, in its confinement;
end every process of the run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import select
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from services.executor.adapters.limits import Confinement
from services.executor.core.lifecycle import CLEAN_PATH


# The job runs under a small shell, which stays the executor's user (root: the job cannot touch
# its files), that records how it ended in a status file (the exit status, then `times`: the CPU
# time used), so that an executor restarted meanwhile still learns the true exit status ($0 is
# the status file). First it joins the run's cgroups (the files before "--"; "0" is whoever
# writes, so the shell's own builtin `echo` must, not a subshell or /bin/echo), so that everything
# the job forks is in them; before it starts the job it makes the status file, empty, so a run
# without one never started. The shell traps (not ignores: the job keeps the default) SIGTERM,
# SIGINT and SIGHUP, so a cancel reaches the job, the job gets its grace period, and the shell
# still records its end. The status is appended to that file, not renamed into place (an `mv`
# would cost a process per job) nor written over it (ext4 flushes a file emptied by a truncation
# when it is closed): the executor reads it only once the shell is gone, and a shell killed while
# writing it leaves at most a first line without its newline, which read_status refuses.
SUPERVISOR = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; ' \
             ': > "$0"; trap : TERM INT HUP; "$@" & wait $!; code=$?; ' \
             'while kill -0 $! 2>/dev/null; do wait $!; code=$?; done; ' \
             '{ echo "$code"; times; } >> "$0"; exit "$code"'


def as_user(uid: int, gid: int, command: list[str]) -> list[str]:
    """`command` run as that user (util-linux's setpriv, found on the clean PATH, not the job's)."""
    return [_tool("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *command]


def with_process_limit(processes_max: int, command: list[str]) -> list[str]:
    """`command` with at most `processes_max` processes of its user (RLIMIT_NPROC, set by
    util-linux's prlimit), or the hard limit it has if lower (a non-root executor cannot raise
    it): a fork bomb where no cgroup holds it fails to fork."""
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    limit = processes_max if hard == resource.RLIM_INFINITY else min(processes_max, hard)
    return [_tool("prlimit"), f"--nproc={limit}", "--", *command]


def with_environment(workdir: int, environment_file: int, command: list[str]) -> list[str]:
    """`command` in the job's open working directory, with the job's environment (read from an
    open file of `export` lines), by a shell that already runs as the job's user: the supervising
    shell (root) never has the job's variables, so no LD_PRELOAD or PATH of the job's reaches a
    process of the executor's user, and never works in the job's folder, where a relative path
    of its would meet the job's symlinks."""
    return ["/bin/sh", "-c", f'cd -P /proc/self/fd/{workdir} && . /proc/self/fd/{environment_file} && exec "$@"',
            "job-environment", *command]


def _tool(name: str) -> str:
    if (path := shutil.which(name, path=CLEAN_PATH)) is None:
        raise FileNotFoundError(f"{name} (util-linux) is needed to run jobs as their users")
    return path


def read_status(path: Path) -> int | None:
    """The job's exit status as its supervising shell recorded it, or None (it did not end by
    itself, or its shell was killed before the status line was whole: only a line ended by its
    newline is read, so a cut "137" is never taken for 13)."""
    try:
        line, newline, _ = path.read_text().partition("\n")
        return int(line) if newline else None
    except (OSError, ValueError):
        return None


def read_cpu_seconds(path: Path) -> float | None:
    """The CPU time (user + system) the job's processes used, as its supervising shell recorded it
    (the children line of `times`: "0m1.250000s 0m0.030000s"), or None."""
    try:
        lines = path.read_text().split("\n")
        if len(lines) < 4:  # the third line is whole once its newline is written
            return None
        return sum(int(minutes) * 60 + float(seconds.rstrip("s"))
                   for minutes, seconds in (value.split("m") for value in lines[2].split()))
    except (OSError, ValueError):
        return None


async def _exit_of(pidfd: int) -> None:
    """Returns when the process of the pidfd has exited: the pidfd becomes readable (no polling)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(pidfd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(pidfd)


class JobProcess:
    """A job's supervising shell (the leader of the job's process group and session), held by a
    pidfd (a signal never reaches another process that got its PID later), and the confinement
    that holds every process of the run."""

    def __init__(self, pid: int, create_time: float, pidfd: int | None, exited: Callable[[], Awaitable[int | None]],
                 confinement: Confinement) -> None:
        self.pid = pid
        self.create_time = create_time
        self.pidfd = pidfd  # None once the shell is gone
        self.confinement = confinement
        self.last_signal_sent = 0
        self.returncode: int | None = None  # the shell's: the job's status, or -signal if it was killed
        self._exited = exited
        self._done: asyncio.Future | None = None
        confinement.track(pid)

    @classmethod
    async def spawn(cls, command: list[str], env: dict[str, str], stdout: int, stderr: int, status_file: Path,
                    umask: int, confinement: Confinement, pass_fds: tuple[int, ...] = ()) -> JobProcess:
        """Start the job's supervising shell in "/" with the open output files and the descriptors
        the command reads (no path is looked up again, so no symlink swapped in meanwhile is followed)."""
        # Not asyncio's subprocesses: its child watcher (3.11) starts a thread per child to wait for
        # it, where the pidfd we hold anyway says when it exited, and Popen.wait then reaps it at once.
        process = subprocess.Popen(
            ["/bin/sh", "-c", SUPERVISOR, str(status_file), *confinement.join_files, "--", *command],
            cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True, umask=umask, pass_fds=pass_fds,
        )
        try:  # our child, not reaped until Popen.wait: its PID is its own (a zombie's at worst)
            pidfd = os.pidfd_open(process.pid)
            create_time = psutil.Process(process.pid).create_time()
        except BaseException:
            process.kill()  # (out of descriptors, say) it is not to run unwatched
            process.wait()
            raise

        async def exited() -> int:
            await _exit_of(pidfd)
            return process.wait()

        return cls(process.pid, create_time, pidfd, exited, confinement)

    @classmethod
    def attach(cls, pid: int, create_time: float, status_file: Path, confinement: Confinement) -> JobProcess | None:
        """Take over a job left running by an earlier executor (None if it is gone, or the PID reused).
        The pidfd is opened first: if the process then has the journaled start time, it is the one held."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        try:
            same = abs(psutil.Process(pid).create_time() - create_time) <= 0.01
        except psutil.Error:
            same = False
        if not same:
            os.close(pidfd)
            return None

        async def exited() -> int | None:
            await _exit_of(pidfd)
            return read_status(status_file)

        return cls(pid, create_time, pidfd, exited, confinement)

    @classmethod
    def find(cls, status_file: Path, confinement: Confinement) -> JobProcess | None:
        """The supervising shell of a job whose PID was never journaled (its executor stopped just
        after spawning it): a shell of this executor's user whose `$0` is the job's own status file.
        Its script is not compared: an earlier version of the executor may have started it."""
        for process in psutil.process_iter(["cmdline", "create_time", "uids"]):
            command, uids = process.info["cmdline"] or [], process.info["uids"]
            if (command[:2] == ["/bin/sh", "-c"] and command[3:4] == [str(status_file)]
                    and uids is not None and uids.real == os.geteuid()):
                return cls.attach(process.pid, process.info["create_time"], status_file, confinement)
        return None

    async def wait(self) -> int | None:
        if self._done is None:
            self._done = asyncio.ensure_future(self._exited())
        self.returncode = await asyncio.shield(self._done)
        if self.pidfd is not None:  # the shell is gone: nothing is signalled by it any more
            os.close(self.pidfd)
            self.pidfd = None
        return self.returncode

    async def kill(self) -> None:
        """SIGKILL to every process of the run; returns when none is left."""
        self.last_signal_sent = signal.SIGKILL
        await self._signal(signal.SIGKILL)
        await self.wait()
        await self.confinement.release()

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM to every process of the run, SIGKILL to whatever is left after the grace period."""
        self.last_signal_sent = signal.SIGTERM
        await self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), grace_s)
        except asyncio.TimeoutError:
            self.last_signal_sent = signal.SIGKILL
        await self._signal(signal.SIGKILL)
        await self.wait()

    async def _signal(self, signum: int) -> None:
        """The shell (by its pidfd) and its process group, while the shell has not exited (its PID,
        the group's id, is still its own); every process of the run, by the confinement."""
        if self.pidfd is not None and not select.select([self.pidfd], [], [], 0)[0]:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
        await self.confinement.signal(signum)
