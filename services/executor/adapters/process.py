"""Job processes on this node: spawn in their own session, end the whole tree, find leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil


# The job runs under a small shell that records how it ended in a status file (the exit status,
# then `times`: the CPU time used), so that an executor restarted meanwhile still learns the true
# exit status ($0 is the status file); before
# it starts the job it makes "$0.started", so a run without it never started. The shell traps
# (not ignores: the job keeps the default) SIGTERM, SIGINT and SIGHUP, so a cancel reaches the
# job, the job gets its grace period, and the shell still records its end.
SUPERVISOR = ': > "$0.started"; trap : TERM INT HUP; "$@" & wait $!; code=$?; ' \
             'while kill -0 $! 2>/dev/null; do wait $!; code=$?; done; ' \
             '{ echo "$code"; times; } > "$0.tmp" && mv "$0.tmp" "$0"; exit "$code"'


def read_status(path: Path) -> int | None:
    """The job's exit status as its supervising shell recorded it, or None (it did not end by itself)."""
    try:
        return int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def read_cpu_seconds(path: Path) -> float | None:
    """The CPU time (user + system) the job's processes used, as its supervising shell recorded it
    (the children line of `times`: "0m1.250000s 0m0.030000s"), or None."""
    try:
        children = path.read_text().splitlines()[2].split()
        return sum(int(minutes) * 60 + float(seconds.rstrip("s"))
                   for minutes, seconds in (value.split("m") for value in children))
    except (OSError, IndexError, ValueError):
        return None


class JobProcess:
    """A job's supervising shell: the leader of the job's process group and session."""

    def __init__(self, pid: int, create_time: float, exited: Callable[[], Awaitable[int | None]]) -> None:
        self.pid = pid
        self.create_time = create_time
        self.last_signal_sent = 0
        self.returncode: int | None = None  # the shell's: the job's status, or -signal if it was killed
        self._exited = exited
        self._done: asyncio.Future | None = None

    @classmethod
    async def spawn(cls, command: list[str], cwd: str, env: dict[str, str], stdout: Path, stderr: Path,
                    status_file: Path) -> JobProcess:
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(stdout, "wb"))
            err = asyncio.subprocess.STDOUT if stderr == stdout else files.enter_context(open(stderr, "wb"))
            process = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", SUPERVISOR, str(status_file), *command, cwd=cwd, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )
        try:
            create_time = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0  # already exited and reaped: there is nothing left to find later
        return cls(process.pid, create_time, process.wait)

    @classmethod
    def attach(cls, pid: int, create_time: float, status_file: Path) -> JobProcess | None:
        """Take over a job left running by an earlier executor (None if it is gone, or the PID reused)."""
        try:
            if abs(psutil.Process(pid).create_time() - create_time) > 0.01:
                return None
            descriptor = os.pidfd_open(pid)
        except (psutil.Error, OSError):
            return None

        async def exited() -> int | None:
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            loop.add_reader(descriptor, lambda: ready.done() or ready.set_result(None))
            try:
                await ready  # a pidfd becomes readable when its process exits: no polling
            finally:
                loop.remove_reader(descriptor)
                os.close(descriptor)
            return read_status(status_file)

        return cls(pid, create_time, exited)

    @classmethod
    def find(cls, status_file: Path) -> JobProcess | None:
        """The supervising shell of a job whose PID was never journaled (its executor stopped just
        after spawning it), by its command line, which names the job's own status file."""
        command = ["/bin/sh", "-c", SUPERVISOR, str(status_file)]
        for process in psutil.process_iter(["cmdline", "create_time"]):
            if (process.info["cmdline"] or [])[:4] == command:
                return cls.attach(process.pid, process.info["create_time"], status_file)
        return None

    async def wait(self) -> int | None:
        if self._done is None:
            self._done = asyncio.ensure_future(self._exited())
        self.returncode = await asyncio.shield(self._done)
        return self.returncode

    async def kill(self) -> None:
        self.last_signal_sent = signal.SIGKILL
        signal_tree(self.pid, signal.SIGKILL)
        await self.wait()

    def kill_leftovers(self) -> None:
        """After the leader exited: SIGKILL whatever of its process group is still running."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM to the whole tree, SIGKILL to whatever is left after the grace period."""
        self.last_signal_sent = signal.SIGTERM
        signal_tree(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), grace_s)
        except asyncio.TimeoutError:
            self.last_signal_sent = signal.SIGKILL
        signal_tree(self.pid, signal.SIGKILL)
        await self.wait()


def signal_tree(pid: int, signum: int) -> None:
    """Signal the process group of `pid` and every descendant of `pid`, even ones that left the group."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    for child in descendants:
        try:
            child.send_signal(signum)
        except psutil.Error:
            pass
