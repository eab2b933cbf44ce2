"""Settings from the environment, with the original's `app.properties` names still accepted.

Precedence: environment variable, then the properties/env file named by `SCNS_CONFIG`
(`KEY=VALUE` lines, `#` comments), then the default below. Settings are read once in a
service's bootstrap and passed down; nothing caches them at import.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Mapping

import msgspec


class Settings(msgspec.Struct, kw_only=True):
    nats_url: str = "nats://127.0.0.1:14222"  # comma-separated for a cluster
    nats_credentials: str = ""  # a file holding this service's NATS user and password (see shared/nats_auth.py)
    nats_tls_ca: str = ""  # PEM files: the CA that signed the NATS servers' certificates turns TLS on,
    nats_tls_cert: str = ""  # and a client certificate and key are sent when the servers ask for one
    nats_tls_key: str = ""
    stream_replicas: int = 1  # 3 on a NATS cluster
    stream_max_age_days: float = 0  # how long the log keeps events; 0: forever
    database_url: str = "postgresql://scns@127.0.0.1:15432/scns"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_tls_cert: str = ""  # PEM files: with both, the gateway serves HTTPS only
    api_tls_key: str = ""
    api_request_timeout_seconds: float = 60.0  # a request's head and body must arrive within this, else 408
    api_max_connections: int = 1000  # open HTTP connections; beyond, 503
    # Reverse proxies (addresses or networks) whose X-Forwarded-For/-Proto are believed; none: no one's
    api_trusted_proxies: list[str] = []
    rate_limit_per_second: float = 50.0  # per user token, and per address without a valid token; 0: off
    rate_limit_burst: int = 1000  # requests a bucket holds: bursts this large go through at once
    admin_token: str = ""  # the bootstrap admin token; others are created through /admin/tokens
    auth_disabled: bool = False  # allowed only when the gateway listens on loopback
    projection_stall_seconds: float = 30.0  # /health: the read model behind and not moving for this long
    # Executor node
    node_name: str = ""
    total_cpus: int = 0  # 0: this machine's CPU count
    total_memory_mb: int = 0  # 0: this machine's memory
    partitions: list[str] = []  # empty: [default_partition]
    default_partition: str = "default"
    job_work_base_dir: str = ""
    job_roots: list[str] = []  # empty: [job_work_base_dir]
    executor_state_dir: str = ""
    kill_grace_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    keep_jobs_on_stop: bool = True  # a stopped executor leaves its jobs running; the next one reattaches
    job_users: list[str] = []  # "account:user" pairs: the OS user a (root) executor runs an account's jobs as
    default_job_user: str = "nobody"  # for the accounts not in job_users; never root
    job_umask: str = "077"
    job_limits: str = "auto"  # how memory and processes are contained: auto | cgroup | watchdog
    # Scheduler
    node_timeout_seconds: float = 30.0
    scheduler_lease_seconds: float = 3.0  # a hung active scheduler is replaced after this
    snapshot_every_events: int = 10_000  # the active scheduler snapshots its state this often

    def node(self) -> str:
        return self.node_name or socket.gethostname().split(".")[0]

    def node_partitions(self) -> list[str]:
        return self.partitions or [self.default_partition]

    def roots(self) -> list[str]:
        roots = self.job_roots or [self.job_work_base_dir]
        return [str(Path(root).resolve()) for root in roots if root]

    @staticmethod
    def arch() -> str:
        return platform.machine()


# Environment name → field. Several names may feed one field (new name first).
_ALIASES: dict[str, tuple[str, ...]] = {
    "nats_url": ("NATS_URL",),
    "nats_credentials": ("NATS_CREDENTIALS",),
    "nats_tls_ca": ("NATS_TLS_CA",),
    "nats_tls_cert": ("NATS_TLS_CERT",),
    "nats_tls_key": ("NATS_TLS_KEY",),
    "stream_replicas": ("STREAM_REPLICAS",),
    "stream_max_age_days": ("STREAM_MAX_AGE_DAYS",),
    "database_url": ("DATABASE_URL",),
    "api_host": ("API_HOST",),
    "api_port": ("API_PORT",),
    "api_tls_cert": ("API_TLS_CERT",),
    "api_tls_key": ("API_TLS_KEY",),
    "api_request_timeout_seconds": ("API_REQUEST_TIMEOUT_SECONDS",),
    "api_max_connections": ("API_MAX_CONNECTIONS",),
    "api_trusted_proxies": ("API_TRUSTED_PROXIES",),
    "rate_limit_per_second": ("RATE_LIMIT_PER_SECOND",),
    "rate_limit_burst": ("RATE_LIMIT_BURST",),
    "admin_token": ("SCNS_ADMIN_TOKEN",),
    "auth_disabled": ("AUTH_DISABLED",),
    "projection_stall_seconds": ("PROJECTION_STALL_SECONDS",),
    "node_name": ("NODE_NAME",),
    "total_cpus": ("TOTAL_CPUS",),
    "total_memory_mb": ("TOTAL_MEMORY_MB",),
    "partitions": ("PARTITIONS",),
    "default_partition": ("DEFAULT_PARTITION",),
    "job_work_base_dir": ("JOB_WORK_BASE_DIR",),
    "job_roots": ("JOB_ROOTS",),
    "executor_state_dir": ("EXECUTOR_STATE_DIR",),
    "kill_grace_seconds": ("KILL_GRACE_SECONDS",),
    "heartbeat_seconds": ("HEARTBEAT_SECONDS",),
    "keep_jobs_on_stop": ("KEEP_JOBS_ON_STOP",),
    "job_users": ("JOB_USERS",),
    "default_job_user": ("DEFAULT_JOB_USER",),
    "job_umask": ("JOB_UMASK",),
    "job_limits": ("JOB_LIMITS",),
    "node_timeout_seconds": ("NODE_TIMEOUT_SECONDS",),
    "scheduler_lease_seconds": ("SCHEDULER_LEASE_SECONDS",),
    "snapshot_every_events": ("SNAPSHOT_EVERY_EVENTS",),
}
_LIST_SEPARATORS = {"partitions": ",", "job_roots": ":", "job_users": ",", "api_trusted_proxies": ","}


class ConfigError(ValueError):
    pass


def read_properties(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    if config_file := env.get("SCNS_CONFIG"):
        env = {**read_properties(Path(config_file)), **env}
    raw: dict[str, object] = {}
    for field, names in _ALIASES.items():
        value = next((env[name] for name in names if env.get(name, "") != ""), None)
        if value is None:
            continue
        if field in _LIST_SEPARATORS:
            raw[field] = [part.strip() for part in value.split(_LIST_SEPARATORS[field]) if part.strip()]
        else:
            raw[field] = value
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid setting: {error}") from error
