"""The executor's rules for a job's life: its environment, how it is run, how it ended (pure)."""

from __future__ import annotations

import re
import signal
from enum import Enum
from typing import NamedTuple

from shared.environment import VARIABLE_NAME
from shared.events import JobSpec
from shared.slurm_formats import format_limit

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_INTERPRETER = "/bin/bash"
SHEBANG = re.compile(r"#![ \t]*([^ \t\n]+)[ \t]*([^\n]*?)[ \t]*(?:\n|$)")  # interpreter, its one argument


class EndedBy(Enum):
    ITSELF = "itself"
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"  # the executor stopped while the job ran
    MEMORY = "memory"  # it went over its memory (spec.memory_mb)


class Outcome(NamedTuple):
    state: str
    exit_code: str
    error_msg: str | None


LOST_MESSAGE = "The executor of the node stopped while the job ran"


def job_environment(spec: JobSpec, job_id: int, node: str, user: str, home: str) -> dict[str, str]:
    """A clean base, then the job's own variables, then ours: never the executor's environment."""
    return {
        "PATH": CLEAN_PATH,
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        "SHELL": DEFAULT_INTERPRETER,
        "TMPDIR": "/tmp",
        **spec.environment,
        "SCNS_JOB_ID": str(job_id),
        "SCNS_JOB_NAME": spec.name,
        "SCNS_CPUS": str(spec.cpus),
        "SCNS_NODE": node,
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NAME": spec.name,
        "SLURM_CPUS_PER_TASK": str(spec.cpus_per_task),
        "SLURM_NTASKS_PER_NODE": str(spec.ntasks_per_node),
        "SLURM_SUBMIT_DIR": spec.cwd,
        "SLURM_JOB_PARTITION": spec.partition,
    }


# What the supervising shell (the executor's user) runs with: none of the job's variables.
SUPERVISOR_ENVIRONMENT = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}


class UnexportableVariable(ValueError):
    """A job's environment names a variable a shell cannot export (the gateway refuses it at submission)."""


def environment_script(environment: dict[str, str]) -> str:
    """The job's environment as `export` lines for a POSIX shell, every value single-quoted (so
    nothing in it is run)."""
    if bad := sorted(name for name in environment if not VARIABLE_NAME.match(name)):
        raise UnexportableVariable(f"environment variable names a shell cannot export: {', '.join(map(repr, bad))}")

    def quoted(value: str) -> str:
        return "'" + value.replace("'", "'\\''") + "'"

    return "".join(f"export {name}={quoted(value)}\n" for name, value in environment.items())


def command_for(script: str, script_path: str) -> list[str]:
    """The script run by the interpreter its `#!` line names, as the kernel runs one (the
    interpreter, the rest of the line as one argument if any, the script's path); else, and when
    the line names none, by bash. Read, not executed: the script is held in memory (memfd), which
    hardened kernels (vm.memfd_noexec) refuse to execute."""
    if shebang := SHEBANG.match(script):
        interpreter, argument = shebang.groups()
        return [interpreter, *([argument] if argument else []), script_path]
    return [DEFAULT_INTERPRETER, script_path]


def exit_code(returncode: int) -> str:
    """Slurm's "<exit status>:<signal>" from a Popen-style return code (negative = signal)."""
    return f"0:{-returncode}" if returncode < 0 else f"{returncode}:0"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def job_returncode(shell_status: int) -> int:
    """The job's Popen-style return code from its supervising shell's: a shell reports a child
    killed by signal N as 128+N (so does an `exit 137`: the two cannot be told apart)."""
    if 128 < shell_status <= 128 + 64:
        return -(shell_status - 128)
    return shell_status


def outcome(returncode: int, ended_by: EndedBy, last_signal_sent: int, time_limit_s: int,
            memory_mb: int = 0) -> Outcome:
    """How a job that ran ended. When we ended it, our last signal is its exit code's signal;
    over its memory, it was killed (SIGKILL, by the kernel or by us)."""
    if ended_by is EndedBy.CANCEL:
        return Outcome("CANCELLED", f"0:{last_signal_sent}", None)
    if ended_by is EndedBy.SHUTDOWN:
        return Outcome("NODE_FAIL", f"0:{last_signal_sent}", LOST_MESSAGE)
    if ended_by is EndedBy.MEMORY:
        return Outcome("OUT_OF_MEMORY", "0:9", f"Memory limit of {format_memory(memory_mb)} exceeded")
    if ended_by is EndedBy.TIMEOUT:
        return Outcome("TIMEOUT", f"0:{last_signal_sent}", f"Time limit of {format_limit(time_limit_s)} reached")
    if returncode == 0:
        return Outcome("COMPLETED", "0:0", None)
    if returncode > 0:
        return Outcome("FAILED", exit_code(returncode), f"Exited with code {returncode}")
    return Outcome("FAILED", exit_code(returncode), f"Killed by {signal_name(-returncode)}")


def format_memory(megabytes: int) -> str:
    """Slurm's way: 64M, 2G."""
    return f"{megabytes // 1024}G" if megabytes and megabytes % 1024 == 0 else f"{megabytes}M"


def ended_by_memory(ended_by: EndedBy, memory_exceeded: bool) -> EndedBy:
    """A run that went over its memory ended OUT_OF_MEMORY, even when a process the kernel's OOM
    killer chose was not the job's main one (as Slurm reports it); a cancel or a limit we
    enforced first still says how it ended."""
    return EndedBy.MEMORY if memory_exceeded and ended_by is EndedBy.ITSELF else ended_by


# A job found in the journal after the executor died: its end is unknown.
LOST = Outcome("NODE_FAIL", "0:9", LOST_MESSAGE)


def requeued(result: Outcome, requeue: bool) -> bool:
    """A run lost with its node or executor (NODE_FAIL) of a job submitted with requeue is not
    the job's end: the job is queued again."""
    return requeue and result.state == "NODE_FAIL"
