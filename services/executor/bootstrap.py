"""Wires the executor of one node: its size, partitions, job roots and state folder, from settings."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import psutil

from services.executor.handlers import Executor, NodeConfig
from shared.bus import JetStreamEventLog
from shared.config import ConfigError, Settings
from shared.service import until_stopped

_NODE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # it is a NATS subject token


def node_config(settings: Settings) -> NodeConfig:
    name = settings.node()
    if not _NODE_NAME.match(name):
        raise ConfigError(f"NODE_NAME {name!r} must be 1-64 letters, digits, '_' or '-'")
    roots = settings.roots()
    if not roots:
        raise ConfigError("set JOB_WORK_BASE_DIR or JOB_ROOTS: the folders jobs may work in")
    state_dir = Path(settings.executor_state_dir or Path.home() / ".scns-executor" / name)
    return NodeConfig(
        name=name,
        cpus=settings.total_cpus or os.cpu_count() or 1,
        memory_mb=settings.total_memory_mb or psutil.virtual_memory().total // (1024 * 1024),
        partitions=settings.node_partitions(),
        arch=settings.arch(),
        job_roots=roots,
        state_dir=state_dir,
        kill_grace_s=settings.kill_grace_seconds,
        heartbeat_s=settings.heartbeat_seconds,
        keep_jobs_on_stop=settings.keep_jobs_on_stop,
    )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    node = node_config(settings)
    events = await JetStreamEventLog.for_service(settings, f"scns-executor-{node.name}")
    executor = Executor(events, node)
    try:
        await executor.recover()
        await executor.register()
        await until_stopped(stop, executor.consume(), executor.heartbeat(), executor.serve_logs())
    finally:
        await executor.stop_jobs()
        await events.close()
