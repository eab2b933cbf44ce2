"""The gateway's HTTP protocol sends a response in one write (uvicorn writes its head and body
apart), keeping the order of everything written and sending it before a close."""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from services.gateway.adapters.http_limits import BoundedHttpToolsProtocol, CoalescedWrites

from ..conftest import eventually
from .transports import RecordingTransport

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope, receive, send) -> None:
    await receive()
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def connection() -> tuple[BoundedHttpToolsProtocol, RecordingTransport]:
    config = Config(app=app, interface="asgi3", log_config=None, lifespan="off", proxy_headers=False)
    protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, request_timeout_s=60)
    transport = RecordingTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


async def test_a_response_leaves_in_one_write():
    protocol, transport = connection()
    protocol.data_received(GET)
    await eventually(lambda: transport.writes, what="the answer")
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ") and transport.writes[0].endswith(b"\r\n\r\n/a")
    protocol.data_received(GET.replace(b"/a", b"/b") + GET.replace(b"/a", b"/c"))  # pipelined: in order
    await eventually(lambda: b"\r\n\r\n/c" in b"".join(transport.writes), what="two more answers")
    later = b"".join(transport.writes[1:])
    assert later.count(b"HTTP/1.1 200 ") == 2 and later.index(b"\r\n\r\n/b") < later.index(b"\r\n\r\n/c")
    transport.close()
    await asyncio.sleep(0)


async def test_writes_of_one_step_are_joined_and_a_close_sends_them_first():
    transport = RecordingTransport()
    transport.protocol = asyncio.Protocol()
    writes = CoalescedWrites(transport)
    writes.write(b"head ")
    writes.write(b"body")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"head body"]
    writes.write(b"last words")
    writes.close()
    assert transport.writes == [b"head body", b"last words"] and transport.closed
    await asyncio.sleep(0)  # the scheduled send finds nothing left, and writes nothing after the close
    assert transport.writes == [b"head body", b"last words"]


async def test_an_abort_sends_nothing_more():
    transport = RecordingTransport()
    transport.protocol = asyncio.Protocol()
    writes = CoalescedWrites(transport)
    writes.write(b"never sent")
    writes.abort()
    await asyncio.sleep(0)
    assert transport.writes == [] and transport.aborted
