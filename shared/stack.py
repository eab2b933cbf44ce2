"""The whole stack on one machine: NATS, PostgreSQL and the four services, as child processes.

`python -m shared.stack up` is what `./just up` runs; the end-to-end tests and the benchmarks
start the same `Stack` on free ports in a temporary folder. Every process is started in its
own process group and stopped by its PID, in reverse order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.embedded import (
    UNPRIVILEGED_USER,
    EmbeddedError,
    NatsServer,
    PostgresServer,
    ensure_port_free,
    reachable_by,
    stop_process,
)
from shared.bus import JetStreamEventLog
from shared.nats_auth import (
    ADMIN,
    GATEWAY,
    PROJECTOR,
    SCHEDULER,
    Credentials,
    credentials_path,
    executor_user,
    issue_credentials,
    read_credentials,
    server_authorization,
)

# Where PostgreSQL keeps its data (and jobs work) when run as root and the project folder is out of reach of
# the unprivileged user (e.g. a checkout in root's mode-700 home). Documented in the README.
ROOT_PG_BASE = Path("/var/lib/scns-conductor")
JOB_USER = "scns-job"


@dataclass
class StackConfig:
    home: Path  # .scns/ of the project, or a temporary folder
    nats_port: int = 14222
    pg_port: int = 15432
    api_port: int = 8000
    node_name: str = "node-01"
    total_cpus: int = 0
    total_memory_mb: int = 0
    kill_grace_seconds: float = 10.0
    schedulers: int = 1  # more are hot standbys: "scheduler-2", ...
    extra_env: dict[str, str] = field(default_factory=dict)  # more settings for every service

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def credentials_dir(self) -> Path:
        return self.home / "nats-credentials"

    @property
    def executor_state_dir(self) -> Path:
        return self.home / "executor"

    @property
    def work_dir(self) -> Path:
        """The jobs' folder: where the unprivileged users a root executor runs jobs as can reach it."""
        return unprivileged_base(self.home) / "work"

    def instances(self) -> list[str]:
        """The service processes to run, in start order: a name is its module, then "-<n>" for a second copy."""
        standbys = [f"scheduler-{n}" for n in range(2, self.schedulers + 1)]
        return ["projector", "scheduler", *standbys, "executor", "gateway"]


def unprivileged_base(home: Path) -> Path:
    """Where the folders an unprivileged user must reach go (PostgreSQL's data, the jobs' work):
    the home, unless run as root with a home that user cannot reach (a checkout in root's mode-700 home)."""
    if os.geteuid() != 0:
        return home
    import pwd

    user = pwd.getpwnam(UNPRIVILEGED_USER)
    home.mkdir(parents=True, exist_ok=True)
    if reachable_by(home, user.pw_uid, user.pw_gid):
        return home
    return ROOT_PG_BASE / hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def pg_base(home: Path) -> Path:
    """Where PostgreSQL's folders go: beside the others, unless its user cannot reach them."""
    if os.environ.get("SCNS_PG_DIR"):
        return Path(os.environ["SCNS_PG_DIR"])
    base = unprivileged_base(home)
    return home / "pg" if base == home else base


def job_user() -> str:
    """Whom a root stack runs jobs as (unless DEFAULT_JOB_USER says): a system user of its own,
    made once. Not `nobody`, which runs PostgreSQL: a job must not reach its files or signal it."""
    if configured := os.environ.get("DEFAULT_JOB_USER"):
        return configured
    import pwd

    try:
        pwd.getpwnam(JOB_USER)
        return JOB_USER
    except KeyError:
        pass
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    result = subprocess.run([useradd or "useradd", "--system", "--user-group", "--no-create-home",
                             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", JOB_USER],
                            capture_output=True, text=True) if useradd else None
    if result is None or (result.returncode != 0 and "already exists" not in result.stderr):
        raise EmbeddedError(f"could not make the system user {JOB_USER!r} that jobs run as "
                            f"({result.stderr.strip() if result else 'no useradd'}); set DEFAULT_JOB_USER to an "
                            f"unprivileged user other than {UNPRIVILEGED_USER!r}")
    return JOB_USER


def secret(path: Path) -> str:
    """A random secret kept in an owner-only file: made on first start, the same afterwards."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_hex(32)  # never starts with "-", which a command line takes for an option
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.nats: NatsServer | None = None
        self.postgres: PostgresServer | None = None
        self.services: dict[str, subprocess.Popen] = {}
        self.token = ""
        self.job_user = ""  # as root: whom jobs run as

    @property
    def logs(self) -> Path:
        return self.config.home / "logs"

    def credentials(self, user: str) -> Credentials:
        """A NATS user's credentials (shared.nats_auth), e.g. the admin's for tests and tools."""
        return read_credentials(credentials_path(self.config.credentials_dir, user))

    async def event_log(self, name: str) -> JetStreamEventLog:
        """A connection to the stack's log as its admin (for tests, tools and benchmarks)."""
        return await JetStreamEventLog.connect(self.nats.url, name, credentials=self.credentials(ADMIN))

    def tool_environment(self) -> dict[str, str]:
        """What a command-line tool (tokens, rebuild) needs to reach the stack's NATS as its admin."""
        return {"NATS_URL": self.nats.url,
                "NATS_CREDENTIALS": str(credentials_path(self.config.credentials_dir, ADMIN))}

    def nats_user(self, instance: str) -> str:
        """The NATS user a service instance connects as: its service's, or its node's."""
        service = instance.split("-")[0]
        return executor_user(self.config.node_name) if service == "executor" else {
            "gateway": GATEWAY, "scheduler": SCHEDULER, "projector": PROJECTOR}[service]

    def environment(self, instance: str) -> dict[str, str]:
        """A service instance's settings: its own secrets only (the database's for those that use
        it, the admin token for the gateway), so a compromised executor holds neither."""
        config = self.config
        service = instance.split("-")[0]
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SCNS_", "NATS_", "DATABASE_"))},
            "NATS_URL": self.nats.url,
            "NATS_CREDENTIALS": str(credentials_path(config.credentials_dir, self.nats_user(instance))),
            **({"DATABASE_URL": self.postgres.dsn()} if service in ("gateway", "projector") else {}),
            **({"SCNS_ADMIN_TOKEN": self.token} if service == "gateway" else {}),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(config.api_port),
            "NODE_NAME": config.node_name,
            "TOTAL_CPUS": str(config.total_cpus),
            "TOTAL_MEMORY_MB": str(config.total_memory_mb),
            "JOB_WORK_BASE_DIR": str(config.work_dir),
            "EXECUTOR_STATE_DIR": str(config.executor_state_dir),
            "KILL_GRACE_SECONDS": str(config.kill_grace_seconds),
            # Stopping the stack stops its jobs too (a lone executor restart still reattaches).
            "KEEP_JOBS_ON_STOP": "false",
            **({"DEFAULT_JOB_USER": self.job_user} if self.job_user else {}),
            "PYTHONUNBUFFERED": "1",
            **config.extra_env,
        }

    def start(self) -> Stack:
        config = self.config
        for folder in (config.home, self.logs, config.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            config.work_dir.chmod(0o1777)  # like /tmp: each job user makes its own folders there
        ensure_port_free(config.api_port, "the API")
        self.token = secret(config.home / "admin-token")
        if os.geteuid() == 0:
            self.job_user = job_user()
        try:
            nodes = [config.node_name]
            authorization = server_authorization(issue_credentials(config.credentials_dir, nodes), nodes)
            self.nats = NatsServer(config.home / "nats", config.nats_port, self.logs / "nats-server.log",
                                   sync_always=os.environ.get("SCNS_NATS_SYNC") == "always",
                                   authorization=authorization).start()
            base = pg_base(config.home)
            self.postgres = PostgresServer(base / "data", config.pg_port, runtime_dir=base, log=self.logs / "postgres.log",
                                           password=secret(config.home / "pg-password")).start()
            for name in config.instances():
                self.start_service(name)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name.split('-')[0]}"], env=self.environment(name), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
            )
        self.services[name] = process
        return process

    def stop_service(self, name: str) -> None:
        stop_process(self.services.pop(name, None), timeout=self.config.kill_grace_seconds + 15)

    def kill(self, part: str) -> None:
        """SIGKILL one part — a service instance, "nats" or "postgres" — with its process group, as
        a crash would; `restart` brings it back."""
        server = {"nats": self.nats, "postgres": self.postgres}.get(part)
        stop_process(server.process if server else self.services[part], first_signal=signal.SIGKILL)

    def restart(self, part: str, kill: bool = False) -> None:
        """Stop (or SIGKILL) one part and start it again in place, then wait until the stack is healthy."""
        server = {"nats": self.nats, "postgres": self.postgres}.get(part)
        if kill:
            self.kill(part)
        if server:
            server.stop()
            server.start()
        else:
            self.stop_service(part)
            self.start_service(part)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Until the API answers healthy and a node has registered (a submit can then be placed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.config.api_url}/health", timeout=2) as response:
                    if response.status == 200 and self.node_registered():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise EmbeddedError(f"the stack did not become healthy within {timeout:.0f} s; logs in {self.logs}")

    def node_registered(self) -> bool:
        import psycopg

        with psycopg.connect(self.postgres.dsn(), connect_timeout=2) as conn:
            row = conn.execute("select count(*) from information_schema.tables"
                               " where table_schema = 'scns' and table_name = 'nodes'").fetchone()
            return bool(row[0]) and bool(conn.execute("select count(*) from scns.nodes where state = 'UP'").fetchone()[0])

    def end_jobs_of_dead_executors(self, timeout: float = 30.0) -> None:
        """An executor that died (a crash, a test's SIGKILL) left its jobs running, as a node's
        would. Before the stack stops, another one takes them over from its journal and ends them
        as it stops (KEEP_JOBS_ON_STOP=false), so that no job outlives the stack."""
        journal = self.config.executor_state_dir / "jobs"  # (a file per run it has not let go)
        for name, process in list(self.services.items()):
            if name.split("-")[0] != "executor" or process.poll() is None or not any(journal.glob("*.json")):
                continue
            since = time.time()
            replacement = self.start_service(name)
            deadline = time.monotonic() + timeout
            # It takes the jobs over before it registers the node again.
            while replacement.poll() is None and time.monotonic() < deadline and not self.registered_since(since):
                time.sleep(0.1)

    def registered_since(self, since: float) -> bool:
        """Whether the node registered at or after `since` (a time.time()), as the read model says."""
        import psycopg

        try:
            with psycopg.connect(self.postgres.dsn(), connect_timeout=2) as conn:
                row = conn.execute("select registered_at >= to_timestamp(%s) from scns.nodes where node_name = %s",
                                   (since, self.config.node_name)).fetchone()
                return bool(row and row[0])
        except psycopg.Error:
            return False

    def check_alive(self) -> None:
        for name, process in self.services.items():
            if process.poll() is not None:
                tail = "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:])
                raise EmbeddedError(f"the {name} exited with status {process.returncode}:\n{tail}")

    def stop(self) -> None:
        self.end_jobs_of_dead_executors()
        for name in reversed(list(self.services)):
            self.stop_service(name)
        if self.postgres:
            self.postgres.stop()
        if self.nats:
            self.nats.stop()


def usage_text(stack: Stack) -> str:
    config = stack.config
    example = {
        "job": {
            "account": "project_alpha", "name": "test_job", "partition": "default",
            "current_working_directory": str(config.work_dir / "test"),
            "standard_output": "test.out", "standard_error": "test.err", "time_limit": "30",
        },
        "script": "#!/bin/bash\necho \"Hello World\"\nsleep 10\necho \"Done\"\n",
    }
    return f"""
SCNS-Conductor is up.
  API          {config.api_url}
  admin token  {stack.token}
               (also in {config.home / 'admin-token'})
  logs         {stack.logs}/
  NATS users   {config.credentials_dir}/ (each service's credentials; integrations: integration.json)
  jobs run as  {stack.job_user or "this user (only a root executor runs them as other users)"}

Submit a job:
  curl -s -X POST {config.api_url}/jobs/submit \\
    -H "Authorization: Bearer $(cat {config.home / 'admin-token'})" -H 'Content-Type: application/json' \\
    -d '{json.dumps(example)}'
Then query it (use the job_id printed):
  curl -s -H "Authorization: Bearer $(cat {config.home / 'admin-token'})" {config.api_url}/jobs/query/JOB_ID

Or with the command line (sbatch, squeue, sacct habits; `scns --help`), from another shell:
{command_line_example(stack)}

Ctrl-C stops everything.
"""


def command_line_example(stack: Stack) -> str:
    """Shell lines that submit a job with `scns` and show the queue and the history."""
    scns = Path(sys.executable).parent / "scns"
    return (f"  export SCNS_URL={stack.config.api_url} SCNS_TOKEN=$(cat {stack.config.home / 'admin-token'})"
            f" SCNS_ACCOUNT=project_alpha\n"
            f"  {scns} submit -D {stack.config.work_dir / 'mine'} --wrap 'echo hello'; {scns} queue; {scns} history")


def up(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="up", description="Run the whole stack in the foreground.")
    parser.add_argument("--home", default=os.environ.get("SCNS_HOME", ".scns"), help="state folder (.scns)")
    args = parser.parse_args(argv)
    config = StackConfig(
        home=Path(args.home).resolve(),
        nats_port=int(os.environ.get("SCNS_NATS_PORT", 14222)),
        pg_port=int(os.environ.get("SCNS_PG_PORT", 15432)),
        api_port=int(os.environ.get("API_PORT", 8000)),
        node_name=os.environ.get("NODE_NAME", "node-01"),
        total_cpus=int(os.environ.get("TOTAL_CPUS", 0)),
        total_memory_mb=int(os.environ.get("TOTAL_MEMORY_MB", 0)),
    )
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stack = Stack(config)
    try:
        print("starting NATS, PostgreSQL and the services ...", flush=True)
        stack.start()
        print(usage_text(stack), flush=True)
        while not stopping:
            stack.check_alive()
            time.sleep(0.2)
    except EmbeddedError as error:
        print(f"up: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["up"]
    if command != "up":
        sys.exit("usage: python -m shared.stack up [--home DIR]")
    sys.exit(up(rest))
