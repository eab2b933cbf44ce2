#!/usr/bin/env python3
"""An HTTP server of the API's shape that does no work: a submit gets the next job id at once, a
query of any job says it COMPLETED with "hi\\n" as its output, in responses of the gateway's size
and headers. Through it the shared load generator shows its own ceiling on this machine: what no
server, however fast, could be measured above through that client.

`python bench/null_server.py PORT` serves on 127.0.0.1:PORT until it is stopped."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from itertools import count
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from shared.embedded import free_port  # noqa: E402

COMPLETED = {"state": "COMPLETED", "error_msg": None,
             "time": {"submit_time": "2026-01-01T00:00:00.000Z", "start_time": "2026-01-01T00:00:00.008Z",
                      "end_time": "2026-01-01T00:00:00.013Z", "eligible_time": "2026-01-01T00:00:00.000Z",
                      "elapsed_time": "0-00:00:00", "limit_time": "5:00"},
             "job_log": {"stdout": "hi\n", "stderr": ""},
             "detail": {"job_name": "lg-drain", "user": "loadgen", "partition": "default", "allocated_cpus": 1,
                        "allocated_nodes": 1, "node_list": "node-01", "exit_code": "0:0", "work_dir": "/tmp",
                        "data_source": "API", "account": "loadgen", "reason": "None", "requeue": False,
                        "restarts": 0}}


class NullApi(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, as the load generator speaks it: a request's head, then the body
    its Content-Length announces."""

    job_ids = count(1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data
        while True:
            head, blank_line, rest = self.received.partition(b"\r\n\r\n")
            if not blank_line:
                return
            lines = head.split(b"\r\n")
            try:
                path = lines[0].split(b" ")[1].decode()
                length = next((int(value) for name, _, value in (line.partition(b":") for line in lines[1:])
                               if name.strip().lower() == b"content-length"), 0)
            except (IndexError, ValueError):  # not a request this server understands: said, and closed
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()
                return
            if len(rest) < length:
                return
            self.received = rest[length:]
            self.transport.write(self.response(path))

    def response(self, path: str) -> bytes:
        if path == "/jobs/submit":
            status, body = "201 Created", {"job_id": str(next(self.job_ids))}
        elif path.startswith("/jobs/query/"):
            status, body = "200 OK", {"job_id": path.rsplit("/", 1)[1], **COMPLETED}
        else:
            status, body = "404 Not Found", {"detail": "not found"}
        content = json.dumps(body, separators=(",", ":")).encode()
        return (f"HTTP/1.1 {status}\r\ndate: {formatdate(usegmt=True)}\r\nserver: uvicorn\r\n"
                f"content-type: application/json\r\ncontent-length: {len(content)}\r\n"
                f"x-request-id: {uuid.uuid4()}\r\nx-process-time: 0.001\r\n\r\n").encode() + content


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(NullApi, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


@contextmanager
def null_server(start_timeout: float = 30) -> Iterator[tuple[str, subprocess.Popen]]:
    """The server in a process of its own (its CPU is not the load generator's), on a free loopback
    port: its base URL and process, stopped on the way out."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, str(port)])
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the null server did not come up on port {port}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
