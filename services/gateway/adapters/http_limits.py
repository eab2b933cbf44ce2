"""uvicorn's httptools protocol with the two bounds it lacks: the size of a request's head and
the time a request may take to arrive.

uvicorn bounds neither with httptools (llhttp takes headers of any size, and nothing times a
request that trickles in; only h11 has a size limit, answered with a bare 400, and h11 is the
slower parser). So a head over MAX_HEAD_BYTES gets 431 and a request not received in full
within `request_timeout_s` of its first byte gets 408, both with the API's JSON error body, and
the connection is closed. Those answers are written here, below the application, so they carry
no X-Request-ID. With pipelining, a refusal waits for the answers of the requests before it
(nothing more is read meanwhile): written at once, it would be read as the answer of the one
being handled, whose own answer would be lost.

The time runs whenever the connection waits for its client: from the connection's opening, and
from each answer on, until a request has arrived in full. An idle connection is closed when it
runs out (without a word, as keep-alive closes one): uvicorn's keep-alive timer alone does not
bound idleness, since any byte stops it, and bare CRLFs between requests start no request.

And a response leaves in one write (CoalescedWrites), not in two.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024  # request line and headers, as h11's default and Node's


class HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, request_timeout_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request_timeout_s = request_timeout_s
        self.head_bytes = 0  # received since the current request began, until its head is complete
        self.head_complete = False
        self.request_begun = True  # a connection is opened to send one: a silent one gets 408 too
        self.deadline: asyncio.TimerHandle | None = None
        self.refusal: bytes | None = None  # decided, and waiting for the earlier requests' answers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescedWrites(transport)  # uvicorn's flow control keeps the real one
        self.update_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:  # the request after the refused one is never answered: not parsed
            return
        if not self.head_complete:
            self.head_bytes += len(data)
        super().data_received(data)
        # A head still incomplete is refused as soon as it is too large: not buffered further.
        if (not self.head_complete and self.head_bytes > MAX_HEAD_BYTES and self.refusal is None
                and not self.transport.is_closing()):
            self.refuse(431, f"request line and headers over {MAX_HEAD_BYTES // 1024} KiB")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        self.update_deadline()

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:  # a head that came whole in one read
            self.refuse(431, f"request line and headers over {MAX_HEAD_BYTES // 1024} KiB")
            raise HeadTooLarge  # stops the parser; uvicorn's 400 for it is skipped below
        self.head_complete = True  # and self.cycle becomes this request's
        super().on_headers_complete()
        self.update_deadline()  # stopped if it was queued behind an earlier request

    def on_message_complete(self) -> None:
        self.request_begun, self.head_complete, self.head_bytes = False, False, 0  # the next request's head begins
        super().on_message_complete()
        self.update_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next queued request, if any
        if self.refusal is not None and self.cycle.response_complete and not self.transport.is_closing():
            self.send_refusal()
        self.update_deadline()

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None and not self.transport.is_closing():  # else refused already, with a status of ours
            super().send_400_response(msg)

    def waiting_for_client(self) -> bool:
        """For a request it has begun (or the connection's first), or, every request answered,
        for the next one. Not for a request queued behind another: uvicorn reads none of it then."""
        idle = self.cycle is None or self.cycle.response_complete
        receiving = self.request_begun and not self.pipeline
        return self.refusal is None and not self.transport.is_closing() and (receiving or idle)

    def update_deadline(self) -> None:
        """Runs while we wait for the client; started once, not again on each byte (a trickle
        would never run out)."""
        if not self.waiting_for_client():
            self.disarm_deadline()
        elif self.deadline is None:
            self.deadline = self.loop.call_later(self.request_timeout_s, self.request_too_slow)

    def disarm_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def request_too_slow(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        answered = self.head_complete and self.cycle.response_started  # (or is being answered) already
        if self.request_begun and not answered:
            self.refuse(408, f"the request did not arrive in full within {self.request_timeout_s:g} s")
        else:  # idle, or a request the application answered before it arrived: only the connection can go
            self.transport.close()

    def refuse(self, status: int, detail: str) -> None:
        """Answer with the API's error body and close the connection: at once, or once the earlier
        requests are answered (until its head is complete, self.cycle is the previous request's)."""
        body = msgspec.json.encode({"detail": detail})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.refusal = b"".join(head) + body
        self.disarm_deadline()
        earlier_unanswered = not self.head_complete and self.cycle is not None and not self.cycle.response_complete
        if earlier_unanswered:
            self.flow.pause_reading()
        else:
            self.send_refusal()

    def send_refusal(self) -> None:
        self.transport.write(self.refusal)
        self.transport.close()


class CoalescedWrites:
    """A transport whose writes of one event-loop step leave in one system call, at the end of it.

    uvicorn writes a response's head and its body separately: two sends, each a trip through the
    kernel's TCP stack, and two segments for the client to read (one send less is ~12% of the CPU
    the HTTP layer and the application take per query). Order is kept: everything goes through
    the buffer, and closing sends it first.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def bounded_protocol(request_timeout_s: float) -> Callable[..., asyncio.Protocol]:
    """What uvicorn's `http` takes: it calls this with its config and server state."""
    return functools.partial(BoundedHttpToolsProtocol, request_timeout_s=request_timeout_s)
