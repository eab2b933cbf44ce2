"""How a run's memory and processes are contained, and every process of it found to be ended.

A cgroup per run where the executor can make them (v2, or v1's memory and pids controllers):
the kernel enforces the memory and the process count, and the cgroup names every process of
the run, however it forked. Elsewhere, a watchdog polls the run's processes: its supervising
shell's tree, every process seen in it before, and every process whose environment carries the
run's marker and that runs as the run's user (RUN_MARKER_VARIABLE: a double-forked daemon,
reparented away, still has it; the marker is a secret, and another user cannot read a process's
environment, so no one can have another account's run counted, and killed, with theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PIDS_MAX = 4096  # processes of one run (cgroup), or of the job's user (RLIMIT_NPROC)
WATCH_INTERVAL_S = 0.25
END_DEADLINE_S = 10.0  # to kill every process of a run and remove its cgroup
CONTROLLERS = ("memory", "pids")
# In every job's environment: the run's marker, a secret (RunIdentity.marker).
RUN_MARKER_VARIABLE = "SCNS_RUN_MARKER"


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """How a run's processes are told: its cgroup's name (run_id), and for the watchdog the
    secret in their environment and the real uid of the run's user (None: not known)."""

    name: str
    marker: str = ""  # "": the watchdog finds the run's processes by their tree alone
    uid: int | None = None


class LimitsUnavailable(RuntimeError):
    """JOB_LIMITS=cgroup on a machine where this executor cannot make cgroups."""


class Confinement(Protocol):
    """One run's containment."""

    @property
    def join_files(self) -> list[str]:
        """Files the supervising shell writes "0" (itself) to before it starts the job."""
        ...

    def track(self, pid: int) -> None:
        """The run's supervising shell, once spawned."""

    async def signal(self, signum: int) -> None:
        """Signal every process of the run."""

    async def over_memory(self) -> None:
        """Returns when the run went over its memory and must be killed (never, where the kernel kills)."""

    def memory_exceeded(self) -> bool:
        """Whether the run went over its memory (the kernel's OOM killer acted, or the watchdog)."""

    def peak_memory_bytes(self) -> int | None:
        """The most memory the run was seen to use (before `release`), or None when not known."""

    async def release(self) -> None:
        """Kill every process of the run, until none is left, and remove what held them."""


class JobLimits(Protocol):
    mode: str
    pids_max: int  # processes of one run (cgroup), or of the job's user (RLIMIT_NPROC)
    # RLIMIT_NPROC counts every process of the job's user on the machine (other jobs, daemons of a
    # shared user like `nobody`): set only where no cgroup holds the run's count exactly.
    limits_user_processes: bool

    def confine(self, run: RunIdentity, memory_mb: int) -> Confinement:
        """A new run's containment, before it is spawned."""

    def reattach(self, run: RunIdentity, memory_mb: int) -> Confinement:
        """The containment of a run an earlier executor started."""

    async def clean(self, executor_id: str, keep: set[str]) -> None:
        """Remove what the ended runs of that executor left (all its runs but those in `keep`)."""


def run_id(job_id: int, end_after: int, executor_id: str) -> str:
    """A run's name (its cgroup's), unique to this executor (node and state folder)."""
    return f"job-{job_id}-{end_after}-{executor_id}"


def cgroup_mounts(mounts: str) -> tuple[str | None, dict[str, str]]:
    """From /proc/mounts: the cgroup2 mount point, and the v1 mount point of each of our controllers."""
    unified, controllers = None, {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount_point, kind, options = fields[1], fields[2], fields[3].split(",")
        if kind == "cgroup2" and unified is None:
            unified = mount_point
        elif kind == "cgroup":
            controllers.update({option: mount_point for option in options if option in CONTROLLERS})
    return unified, controllers


def oom_kills(text: str) -> int:
    """The `oom_kill N` count of a v2 memory.events or a v1 memory.oom_control file (0 if absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def job_limits(mode: str, node: str, pids_max: int = PIDS_MAX, mounts: Path = Path("/proc/mounts")) -> JobLimits:
    """JOB_LIMITS: "cgroup", "watchdog", or "auto" (cgroups when this executor can make them)."""
    if mode == "watchdog":
        return ProcessWatchdog(pids_max)
    cgroups = CgroupTree.on_this_machine(node, mounts, pids_max)
    if cgroups is not None:
        return cgroups
    if mode == "cgroup":
        raise LimitsUnavailable("JOB_LIMITS=cgroup, but this executor cannot make cgroups with the memory and pids "
                                "controllers (it needs root, and cgroup v2 with both enabled, or v1's memory and pids)")
    log.warning("JOB_LIMITS=auto: no cgroup can be made here, so a watchdog polls the jobs' processes: memory is "
                "checked every %.2f s (a job may exceed it in between), only RLIMIT_NPROC bounds forking, and a process "
                "that leaves its job's tree and clears its environment escapes it", WATCH_INTERVAL_S)
    return ProcessWatchdog(pids_max)


class CgroupTree:
    """This node's cgroups: `scns/<node>` in each hierarchy (one with v2), a cgroup per run below."""

    mode = "cgroup"
    limits_user_processes = False  # pids.max counts the run's processes

    def __init__(self, bases: list[Path], version: int, pids_max: int = PIDS_MAX) -> None:
        self.bases = bases  # v1: [memory, pids]; v2: [unified]
        self.version = version
        self.pids_max = pids_max

    @classmethod
    def on_this_machine(cls, node: str, mounts: Path, pids_max: int = PIDS_MAX) -> CgroupTree | None:
        try:
            unified, controllers = cgroup_mounts(mounts.read_text())
            if unified and set(CONTROLLERS) <= set((Path(unified) / "cgroup.controllers").read_text().split()):
                return cls.v2(Path(unified), node, pids_max)
            if set(CONTROLLERS) <= controllers.keys():
                return cls.v1([Path(controllers[name]) for name in CONTROLLERS], node, pids_max)
        except OSError as error:
            log.info("cgroups are not usable here (%s): a watchdog contains the jobs", error)
        return None

    @classmethod
    def v2(cls, mount: Path, node: str, pids_max: int = PIDS_MAX) -> CgroupTree:
        """Enable memory and pids for our subtree (our folders hold no process: v2's rule)."""
        folder = mount
        for name in ("scns", node):
            (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
            folder = folder / name
            folder.mkdir(exist_ok=True)
        (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
        return cls([folder], 2, pids_max).probed()

    @classmethod
    def v1(cls, mounts: list[Path], node: str, pids_max: int = PIDS_MAX) -> CgroupTree:
        bases = [mount / "scns" / node for mount in mounts]
        for base in bases:
            base.mkdir(parents=True, exist_ok=True)
        return cls(bases, 1, pids_max).probed()

    def probed(self) -> CgroupTree:
        """Itself, once a cgroup was made and removed in each base (the bases may exist, made by
        a root executor, where this one may not make cgroups): raises OSError otherwise."""
        for base in self.bases:
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
        return self

    def _run(self, name: str) -> CgroupRun:
        dirs = [base / name for base in self.bases]
        # How the supervising shell joins (it writes "0", itself): in v1 it moves its own thread
        # (`tasks`), which the kernel does without the global lock whose writer waits for an RCU
        # grace period (milliseconds per job); the shell has no other thread, so the whole process
        # moves. v2 moves a single thread only within a threaded subtree.
        return CgroupRun(dirs, "cgroup.procs" if self.version == 2 else "tasks",
                         dirs[0] / ("memory.events" if self.version == 2 else "memory.oom_control"),
                         dirs[0] / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"))

    def confine(self, identity: RunIdentity, memory_mb: int) -> CgroupRun:
        run = self._run(identity.name)
        for folder in run.dirs:
            folder.mkdir(exist_ok=True)
        limit = str(memory_mb * MiB)
        memory, pids = run.dirs[0], run.dirs[-1]
        try:
            if self.version == 2:
                (memory / "memory.max").write_text(limit)
                if (memory / "memory.swap.max").exists():
                    (memory / "memory.swap.max").write_text("0")
            else:
                (memory / "memory.limit_in_bytes").write_text(limit)
                if (memory / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no swap beyond it
                    (memory / "memory.memsw.limit_in_bytes").write_text(limit)
            (pids / "pids.max").write_text(str(self.pids_max))
        except OSError:
            run.remove()
            raise
        return run

    def reattach(self, identity: RunIdentity, memory_mb: int) -> CgroupRun:
        return self._run(identity.name)

    async def clean(self, executor_id: str, keep: set[str]) -> None:
        names = {folder.name for base in self.bases if base.is_dir() for folder in base.iterdir()
                 if folder.is_dir() and folder.name.startswith("job-") and folder.name.endswith(f"-{executor_id}")}
        for name in sorted(names - keep):
            log.info("removing the cgroup %s of a run that ended while no executor watched", name)
            await self._run(name).release()


class CgroupRun:
    def __init__(self, dirs: list[Path], join_file: str, oom_file: Path, peak_file: Path) -> None:
        self.dirs = dirs
        self.join_file = join_file  # in each of its cgroups: the file its supervising shell joins by
        self.oom_file = oom_file
        self.peak_file = peak_file  # the kernel's high-water mark of the run's memory (page cache included)

    @property
    def join_files(self) -> list[str]:
        return [str(folder / self.join_file) for folder in self.dirs]

    def track(self, pid: int) -> None:
        pass  # the cgroup knows its processes

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                found.update(int(pid) for pid in (folder / "cgroup.procs").read_text().split())
        return found

    async def signal(self, signum: int) -> None:
        self._signal(signum)

    def _signal(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    async def over_memory(self) -> None:
        await asyncio.get_running_loop().create_future()  # the kernel enforces the limit

    def memory_exceeded(self) -> bool:
        try:
            return oom_kills(self.oom_file.read_text()) > 0
        except OSError:
            return False

    def peak_memory_bytes(self) -> int | None:
        try:  # (v2's memory.peak is from Linux 5.19 on)
            return int(self.peak_file.read_text())
        except (OSError, ValueError):
            return None

    async def release(self) -> None:
        deadline = time.monotonic() + END_DEADLINE_S
        kill_file = self.dirs[0] / "cgroup.kill"  # v2 (5.14+): every member at once
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        while self.pids() and time.monotonic() < deadline:
            self._signal(signal.SIGKILL)  # again and again: a fork bomb forks between two reads
            await asyncio.sleep(0.01)
        while not self.remove() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # a killed process leaves its cgroup when it is reaped
        if self.pids() or any(folder.exists() for folder in self.dirs):
            log.error("cgroup %s could not be emptied and removed in %.0f s", self.dirs[0], END_DEADLINE_S)

    def remove(self) -> bool:
        """Remove the run's cgroups (each must be empty); whether none is left."""
        for folder in self.dirs:
            with contextlib.suppress(OSError):  # busy, or gone already
                folder.rmdir()
        return not any(folder.exists() for folder in self.dirs)


class ProcessWatchdog:
    """Where no cgroup can be made: the memory of a run's processes polled, its processes tracked."""

    mode = "watchdog"
    limits_user_processes = True

    def __init__(self, pids_max: int = PIDS_MAX) -> None:
        self.pids_max = pids_max

    def confine(self, identity: RunIdentity, memory_mb: int) -> WatchedRun:
        return WatchedRun(identity, memory_mb * MiB)

    reattach = confine  # nothing of a run outlives its executor but its processes, found again alike

    async def clean(self, executor_id: str, keep: set[str]) -> None:
        pass  # nothing is left of an ended run but processes, ended with it (or found by no one)


class WatchedRun:
    """A run's processes, found by scanning the process table (in a thread: a scan of thousands of
    processes takes a while, and the executor's event loop must not wait for it)."""

    def __init__(self, identity: RunIdentity, memory_bytes: int) -> None:
        self.identity = identity
        self.memory_bytes = memory_bytes
        self.known: dict[int, float] = {}  # pid: start time, of every process of the run found so far
        self.looked_at: dict[tuple[int, float], bool] = {}  # (pid, start): marked as the run's?
        self.exceeded = False
        self.peak_bytes = 0  # the largest total resident set of the run's processes at a poll
        self._scanning = threading.Lock()  # a scan updates what is known: one at a time

    @property
    def join_files(self) -> list[str]:
        return []

    def track(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.known[pid] = psutil.Process(pid).create_time()

    def scan(self) -> list[psutil.Process]:
        """One pass over the process table, linear in its size: the run's live processes (the
        processes of it known before, the same PID with the same start time, the processes marked
        as its, and every descendant of these), all known from now on, so a process reparented
        away is still found."""
        with self._scanning:
            table: dict[int, tuple[psutil.Process, dict]] = {}
            children: dict[int, list[int]] = defaultdict(list)
            found: set[int] = set()
            looked_at: dict[tuple[int, float], bool] = {}
            for process in psutil.process_iter():
                try:  # as_dict, not process_iter's `info`: that is shared with every other caller
                    info = process.as_dict(["ppid", "create_time", "status"])
                except psutil.Error:
                    continue
                table[process.pid] = process, info
                children[info["ppid"]].append(process.pid)
                key = (process.pid, info["create_time"])
                marked = self.looked_at[key] if key in self.looked_at else self._marked(process)
                if marked is not None:
                    looked_at[key] = marked
                if self.known.get(process.pid) == info["create_time"] or marked:
                    found.add(process.pid)
            to_visit = list(found)
            while to_visit:
                for child in children.pop(to_visit.pop(), []):
                    if child not in found:
                        found.add(child)
                        to_visit.append(child)
            found.discard(os.getpid())
            self.looked_at = looked_at  # the processes that are gone are forgotten
            self.known = {pid: table[pid][1]["create_time"] for pid in found}
            return [table[pid][0] for pid in found if table[pid][1]["status"] != psutil.STATUS_ZOMBIE]

    def _marked(self, process: psutil.Process) -> bool | None:
        """Whether the process is the run's user's and has the run's marker in its environment; None
        when that cannot be told for good yet (a process of the run's user without the marker now,
        or unreadable: caught between fork and exec, say), so it is looked at again next time."""
        marker, uid = self.identity.marker, self.identity.uid
        try:
            if not marker or (uid is not None and process.uids().real != uid):
                return False
            return True if process.environ().get(RUN_MARKER_VARIABLE) == marker else None
        except psutil.Error:
            return None

    def _signal_members(self, signum: int) -> int:
        """Signal the run's processes (psutil checks each PID's start time first); how many there were."""
        members = self.scan()
        for process in members:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)
        return len(members)

    def _resident_bytes(self) -> int:
        resident = 0
        for process in self.scan():
            with contextlib.suppress(psutil.Error):
                resident += process.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, resident)
        return resident

    async def signal(self, signum: int) -> None:
        await asyncio.to_thread(self._signal_members, signum)

    async def over_memory(self) -> None:
        while await asyncio.to_thread(self._resident_bytes) <= self.memory_bytes:
            await asyncio.sleep(WATCH_INTERVAL_S)
        self.exceeded = True

    def memory_exceeded(self) -> bool:
        return self.exceeded

    def peak_memory_bytes(self) -> int | None:
        return self.peak_bytes or None  # None: the run ended before the first poll

    async def release(self) -> None:
        """SIGKILL whatever a scan finds, until a scan finds nothing (each process is killed
        before the deadline is looked at: a slow scan never saves a process)."""
        deadline = time.monotonic() + END_DEADLINE_S
        while await asyncio.to_thread(self._signal_members, signal.SIGKILL):
            if time.monotonic() > deadline:
                log.error("processes of a run outlived %.0f s of SIGKILL: %s", END_DEADLINE_S, sorted(self.known))
                return
            await asyncio.sleep(0.01)

