"""Wires the executor of one node: its size, partitions, job roots, state folder, the users its
jobs run as and how their resources are contained, from settings."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import psutil

from services.executor.adapters.limits import JobLimits, LimitsUnavailable, job_limits
from services.executor.adapters.users import JobUser, JobUsers, UnknownJobUser
from services.executor.core.users import ROOT_NAMES, JobUserSettingError, parse_umask, parse_user_map, shared_users
from services.executor.handlers import Executor, NodeConfig
from shared.bus import JetStreamEventLog
from shared.config import ConfigError, Settings
from shared.events import NODE_NAME
from shared.service import until_stopped

log = logging.getLogger(__name__)

LIMIT_MODES = ("auto", "cgroup", "watchdog")


def node_config(settings: Settings) -> NodeConfig:
    name = settings.node()
    if not NODE_NAME.match(name):
        raise ConfigError(f"NODE_NAME {name!r} must be 1-64 letters, digits, '_' or '-'")
    roots = settings.roots()
    if not roots:
        raise ConfigError("set JOB_WORK_BASE_DIR or JOB_ROOTS: the folders jobs may work in")
    # Absolute: the supervising shell (root) writes its status files by these paths, and a
    # relative one would be looked up from wherever that shell is, never the job's folder.
    state_dir = Path(settings.executor_state_dir or Path.home() / ".scns-executor" / name).resolve()
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
        job_users=job_users(settings),
        job_umask=_checked(parse_umask, settings.job_umask),
    )


def job_users(settings: Settings) -> JobUsers:
    """JOB_USERS and DEFAULT_JOB_USER, looked up on this node; never root. An executor that is not
    root cannot switch users: it runs every job as itself."""
    names = _checked(parse_user_map, settings.job_users)
    if settings.default_job_user in ROOT_NAMES:
        raise ConfigError("DEFAULT_JOB_USER: jobs never run as root")
    if os.geteuid() != 0:
        log.warning("this executor is not root: it runs every job as its own user (JOB_USERS and "
                    "DEFAULT_JOB_USER need root)")
        return JobUsers()
    try:
        users = JobUsers(default=JobUser.named(settings.default_job_user),
                         by_account={account: JobUser.named(name) for account, name in names.items()})
    except UnknownJobUser as error:
        raise ConfigError(f"JOB_USERS / DEFAULT_JOB_USER: {error}") from None
    for user in (users.default, *users.by_account.values()):
        if user.uid == 0:
            raise ConfigError(f"jobs never run as root: {user.name!r} has uid 0 (DEFAULT_JOB_USER, JOB_USERS)")
    shared = shared_users({account: user.name for account, user in users.by_account.items()}, users.default.name)
    log.warning("accounts that share a job user can read each other's files: %s ('*': every account not in "
                "JOB_USERS)", "; ".join(f"{user}: {', '.join(accounts)}" for user, accounts in shared.items()))
    return users


def limits(settings: Settings, node: str) -> JobLimits:
    if settings.job_limits not in LIMIT_MODES:
        raise ConfigError(f"JOB_LIMITS {settings.job_limits!r} is not one of {', '.join(LIMIT_MODES)}")
    try:
        chosen = job_limits(settings.job_limits, node)
    except LimitsUnavailable as error:
        raise ConfigError(str(error)) from None
    log.info("job memory and processes contained by %s", chosen.mode)
    return chosen


def _checked(parse, value):
    try:
        return parse(value)
    except JobUserSettingError as error:
        raise ConfigError(str(error)) from None


async def main(settings: Settings, stop: asyncio.Event) -> None:
    node = node_config(settings)
    containment = limits(settings, node.name)
    events = await JetStreamEventLog.for_service(settings, f"scns-executor-{node.name}")
    executor = Executor(events, node, limits=containment)
    try:
        await executor.recover()
        await executor.register()
        await until_stopped(stop, executor.consume(), executor.heartbeat(), executor.serve_logs())
    finally:
        await executor.stop_jobs()
        await events.close()
