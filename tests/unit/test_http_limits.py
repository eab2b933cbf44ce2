"""The gateway's HTTP protocol (adapters/http_limits.py) on an in-memory connection: what it
writes, and when, with time passing only when a test says so."""

from __future__ import annotations

import asyncio
import re

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from services.gateway.adapters.http_limits import MAX_HEAD_BYTES, BoundedHttpToolsProtocol

from ..conftest import eventually
from .transports import RecordingTransport

REQUEST_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 5.0
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
SLOW = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"  # answered when the test releases it
OVERSIZE = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * MAX_HEAD_BYTES + b"\r\n\r\n"


class Timer:
    def __init__(self, when: float, callback) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """The running loop for tasks, but its timers fire only when the test advances the time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback, *args) -> Timer:
        timer = Timer(self.now + delay, lambda: callback(*args))
        self.timers.append(timer)
        return timer

    def create_task(self, coroutine, **options) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(coroutine, **options)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in sorted(self.timers, key=lambda timer: timer.when):
            if timer.when <= self.now and not timer.cancelled:
                timer.cancelled = True
                timer.callback()


class Connection:
    def __init__(self) -> None:
        self.slow_started = asyncio.Event()
        self.release_slow = asyncio.Event()
        self.clock = ManualClock()
        config = Config(app=self.app, interface="asgi3", log_config=None, lifespan="off", proxy_headers=False,
                        timeout_keep_alive=KEEP_ALIVE_S)
        self.protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, _loop=self.clock,
                                                 request_timeout_s=REQUEST_TIMEOUT_S)
        self.transport = RecordingTransport()
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    async def app(self, scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            self.slow_started.set()
            await self.release_slow.wait()
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.transport.written)]

    async def answered(self, count: int) -> list[int]:
        return await eventually(lambda: len(self.statuses()) >= count and self.statuses(), timeout=10,
                                what=f"{count} answers")


@pytest.fixture
async def connection():
    connection = Connection()
    yield connection
    connection.release_slow.set()
    connection.transport.close()
    await asyncio.sleep(0)  # connection_lost runs


# ---- time between requests ------------------------------------------------------------------

async def test_a_connection_kept_alive_by_blank_lines_is_closed_when_the_next_request_is_due(connection):
    connection.send(GET)
    assert await connection.answered(1) == [200]
    for _ in range(10):  # bare CRLFs start no request, but they stop uvicorn's keep-alive timer
        connection.send(b"\r\n")
        connection.clock.advance(1.0)
        if connection.transport.closed:
            break
    assert connection.transport.closed
    assert connection.statuses() == [200]  # idle: closed without a word, as keep-alive does


async def test_a_next_request_that_does_not_arrive_in_time_gets_408(connection):
    connection.send(GET)
    assert await connection.answered(1) == [200]
    connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and the rest never comes
    connection.clock.advance(REQUEST_TIMEOUT_S)
    assert connection.statuses() == [200, 408] and connection.transport.closed


# ---- pipelined requests: each answer goes to its own request -----------------------------------

@pytest.mark.parametrize("chunks", [[SLOW + OVERSIZE], [SLOW, OVERSIZE[:-4]]], ids=["whole head", "head without end"])
async def test_a_pipelined_request_refused_for_its_head_is_answered_after_the_earlier_one(connection, chunks):
    for chunk in chunks:
        connection.send(chunk)
    await eventually(connection.slow_started.is_set, timeout=10, what="/slow to be handled")
    assert connection.transport.written == b""  # a 431 now would be read as /slow's answer
    connection.release_slow.set()
    assert await connection.answered(2) == [200, 431]
    assert connection.transport.written.startswith(b"HTTP/1.1 200 OK") and connection.transport.closed


async def test_a_pipelined_request_that_does_not_arrive_in_time_is_answered_after_the_earlier_one(connection):
    connection.send(SLOW + b"GET / HTTP/1.1\r\nHost: x\r\n")  # the second never ends
    await eventually(connection.slow_started.is_set, timeout=10, what="/slow to be handled")
    connection.clock.advance(REQUEST_TIMEOUT_S)
    assert connection.transport.written == b""
    connection.release_slow.set()
    assert await connection.answered(2) == [200, 408]
    assert connection.transport.closed


async def test_a_pipelined_request_is_not_timed_out_while_it_waits_for_the_earlier_one(connection):
    # uvicorn reads no more of a request queued behind another: its time starts when it does.
    connection.send(SLOW + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    await eventually(connection.slow_started.is_set, timeout=10, what="/slow to be handled")
    connection.clock.advance(REQUEST_TIMEOUT_S * 3)
    connection.release_slow.set()
    assert await connection.answered(1) == [200]
    connection.send(b"67890")
    assert await connection.answered(2) == [200, 200]
    assert not connection.transport.closed
