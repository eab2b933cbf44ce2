"""The harness: real NATS (JetStream) and PostgreSQL servers on free loopback ports, data in a
temporary folder, stopped by PID at the end. Nothing here touches a server it did not start."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from shared.bus import JetStreamEventLog
from shared.embedded import NatsServer, PostgresServer, free_port
from shared.events import SNAPSHOTS_BUCKET, STREAM


HYPOTHESIS_HOME = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis keeps its examples and a cache of the constants in this code in `.hypothesis` in
    # the working directory; the cache names the checkout's path. A temporary folder instead.
    home = config.stash[HYPOTHESIS_HOME] = Path(tempfile.mkdtemp(prefix="scns-hypothesis-"))
    set_hypothesis_home_dir(home)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash[HYPOTHESIS_HOME], ignore_errors=True)


@pytest.fixture(scope="session")
def scratch() -> Path:
    # Not pytest's tmp_path: that lives under a mode-700 folder that PostgreSQL's
    # unprivileged user (when the suite runs as root) cannot reach.
    folder = Path(tempfile.mkdtemp(prefix="scns-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server(scratch: Path) -> NatsServer:
    server = NatsServer(scratch / "nats", free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(scratch: Path) -> PostgresServer:
    server = PostgresServer(scratch / "pg" / "data", free_port(), runtime_dir=scratch / "pg").start()
    yield server
    server.stop()


@pytest.fixture
async def event_log(nats_server: NatsServer) -> JetStreamEventLog:
    """A connection to a fresh, empty stream (and no scheduler snapshot of an earlier one)."""
    events = await JetStreamEventLog.connect(nats_server.url, "test")
    for stream in (STREAM, f"OBJ_{SNAPSHOTS_BUCKET}"):
        try:
            await events.js.delete_stream(stream)
        except Exception:
            pass
    await events.ensure_stream()
    yield events
    await events.close()


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    """A fresh database; its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    yield postgres_server.dsn(name)
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"drop database {name} with (force)")


async def eventually(check: Callable[[], Awaitable[object] | object], timeout: float = 30.0,
                     what: str = "condition"):
    """Poll `check` (plain or async) until it gives something truthy, or fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)
