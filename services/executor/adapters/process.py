"""Job processes on this node: spawn in their own session, end the whole tree, find leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import psutil


class JobProcess:
    """A running job: its leader process, which is also its process group and session."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        try:
            self.create_time = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            self.create_time = 0.0  # already exited and reaped: there is nothing left to find later
        self.last_signal_sent = 0

    @classmethod
    async def spawn(cls, command: list[str], cwd: str, env: dict[str, str], stdout: Path, stderr: Path) -> JobProcess:
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(stdout, "wb"))
            err = asyncio.subprocess.STDOUT if stderr == stdout else files.enter_context(open(stderr, "wb"))
            process = await asyncio.create_subprocess_exec(
                *command, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
        return cls(process)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        return await self.process.wait()

    async def kill(self) -> None:
        self.last_signal_sent = signal.SIGKILL
        signal_tree(self.pid, signal.SIGKILL)
        await self.process.wait()

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
            await asyncio.wait_for(asyncio.shield(self.process.wait()), grace_s)
        except asyncio.TimeoutError:
            self.last_signal_sent = signal.SIGKILL
        signal_tree(self.pid, signal.SIGKILL)
        await self.process.wait()


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


def kill_leftover(pid: int, create_time: float) -> bool:
    """Kill a job process found after a restart, if it is still the same process (not a reused PID)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.01:
            return False
    except psutil.Error:
        return False
    signal_tree(pid, signal.SIGKILL)
    return True
