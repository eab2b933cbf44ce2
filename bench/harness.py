"""What the benchmarks share: a whole stack on free ports in a temporary folder, and the shared load
generator (bench/loadgen.py, run as a separate process so its CPU is not the services')."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from shared.embedded import free_port  # noqa: E402
from shared.stack import Stack, StackConfig  # noqa: E402


LEFT_FOR_EXIT: list[Path] = []


@contextmanager
def running_stack(total_cpus: int = 2, *, schedulers: int = 1, sync_always: bool = False,
                  extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """NATS, PostgreSQL and the services on free ports, stopped and removed on the way out."""
    home = Path(tempfile.mkdtemp(prefix="scns-bench-"))
    home.chmod(0o755)
    stack = Stack(StackConfig(home=home, nats_port=free_port(), pg_port=free_port(), api_port=free_port(),
                              total_cpus=total_cpus, kill_grace_seconds=2.0, schedulers=schedulers,
                              extra_env=extra_env or {}))
    # The stack takes the durability mode from the environment, as `SCNS_NATS_SYNC=always ./just up` does.
    previous_sync = os.environ.pop("SCNS_NATS_SYNC", None)
    if sync_always:
        os.environ["SCNS_NATS_SYNC"] = "always"
    try:
        stack.start()
        yield stack
    finally:
        os.environ.pop("SCNS_NATS_SYNC", None)
        if previous_sync is not None:
            os.environ["SCNS_NATS_SYNC"] = previous_sync
        stack.stop()
        remove_at_exit(home)


def remove_at_exit(folder: Path) -> None:
    """Remove a stopped stack's folder when the benchmarks end, not at once: removing a drain's
    thousands of files would slow every file the next benchmark makes for minutes on a
    filesystem like this machine's (ext4 without a journal searches past recently freed inodes)."""
    if not LEFT_FOR_EXIT:
        atexit.register(lambda: [shutil.rmtree(left, ignore_errors=True) for left in LEFT_FOR_EXIT])
    LEFT_FOR_EXIT.append(folder)


def job_folder(stack: Stack) -> Path:
    """Where the benchmarks' jobs work, in the stack's folder."""
    folder = stack.config.work_dir / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    if stack.job_user:  # a root stack runs jobs as that user, who writes their output here
        shutil.chown(folder, stack.job_user, stack.job_user)
    return folder


def loadgen_process(stack: Stack, mode: str, *args: str) -> subprocess.Popen:
    """The load generator started against the stack."""
    # `--token=…` in one word: a token may start with "-", which argparse would take for an option.
    return client_process(stack.config.api_url, mode, f"--token={stack.token}", "--cwd", str(job_folder(stack)), *args)


def client_process(base_url: str, mode: str, *args: str) -> subprocess.Popen:
    """The load generator started against any server."""
    command = [sys.executable, str(HERE / "loadgen.py"), "--base-url", base_url, "--mode", mode, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def loadgen_result(process: subprocess.Popen, timeout: float = 1800) -> dict:
    """The figures of the load generator's mode (its JSON line's `results[mode]`), with the CPU the
    load generator itself took (on a small machine it competes with the services) and, when a
    request failed, its status counts and first errors (what a rejected submit was)."""
    stdout, stderr = process.communicate(timeout=timeout)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode not in (0, 1) or not lines:
        raise RuntimeError(f"loadgen failed ({process.returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
    line = json.loads(lines[-1])
    figures = {**line["results"][line["mode"]], "client_cpu_s": line["client_cpu_s"], "client_elapsed_s": line["elapsed_s"]}
    if line["error_samples"]:
        figures |= {"http_status_counts": line["http_status_counts"], "error_samples": line["error_samples"]}
    return figures


def loadgen(stack: Stack, mode: str, *args: str) -> dict:
    return loadgen_result(loadgen_process(stack, mode, *args))
