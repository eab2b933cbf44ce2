import os
import socket

import psycopg
import pytest

from shared import embedded
from shared.embedded import EmbeddedError, PostgresServer, ensure_port_free, free_port

pytestmark = pytest.mark.integration


@pytest.mark.skipif(os.geteuid() != 0, reason="binaries are copied only when PostgreSQL must run as another user")
def test_postgres_runs_from_a_copy_when_its_user_cannot_reach_the_binaries(scratch, monkeypatch):
    installed = embedded._postgres_bindir()
    real = embedded.reachable_by
    monkeypatch.setattr(embedded, "reachable_by",
                        lambda path, uid, gid: not str(path).startswith(str(installed)) and real(path, uid, gid))
    folder = scratch / "pg-copy"
    server = PostgresServer(folder / "data", free_port(), runtime_dir=folder).start()
    try:
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("select current_user").fetchone() == ("scns",)
        assert (folder / "pg-binaries").is_dir()
        assert server.process.pid and os.stat(f"/proc/{server.process.pid}").st_uid != 0
    finally:
        server.stop()


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(EmbeddedError, match=f"port {port} on 127.0.0.1 is already in use"):
            ensure_port_free(port, "the API")


def test_postgres_with_a_password_refuses_whoever_lacks_it_even_on_a_cluster_made_without_one(scratch):
    folder = scratch / "pg-password"
    server = PostgresServer(folder / "data", free_port(), runtime_dir=folder).start()  # made open (trust)
    server.stop()
    server = PostgresServer(folder / "data", server.port, runtime_dir=folder, password="it's s3cret").start()
    try:
        with psycopg.connect(server.dsn(), connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("scns",)
        for guess in ("", ":wrong"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(f"postgresql://scns{guess}@127.0.0.1:{server.port}/scns", connect_timeout=5)
    finally:
        server.stop()
