"""The gateway under hostile input: oversized bodies and heads, too many requests, slow clients,
too many connections, HTTPS, the audit trail, and no credentials in the logs.

Most run against the session's stack; the rest against a second gateway on the same stack with
HTTPS and small limits (a rate of 1 request a second in bursts of 5, 2 s to send a request,
8 connections)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

from services.gateway.adapters.http_limits import MAX_HEAD_BYTES
from services.gateway.core.validation import MAX_BODY_BYTES
from shared.embedded import free_port, stop_process

from ..certs import self_signed
from ..conftest import eventually
from .helpers import job, submit

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LIMITED = {"RATE_LIMIT_PER_SECOND": "1", "RATE_LIMIT_BURST": "5", "API_REQUEST_TIMEOUT_SECONDS": "2",
           "API_MAX_CONNECTIONS": "8"}
# Rate limits without a valid token are per client address: a test that uses one up comes from an
# address of its own on the loopback network, so the others are not slowed by it.
ADDRESSES = (f"127.0.0.{n}" for n in itertools.count(2))


@dataclass
class Gateway:
    url: str
    port: int
    cert: Path
    log: Path

    def client(self, token: str | None = None, source: str = "127.0.0.1", **options) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.AsyncHTTPTransport(verify=tls_to(self), local_address=source, **options)
        return httpx.AsyncClient(base_url=self.url, transport=transport, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def certificate(scratch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed(scratch / f"tls-{uuid.uuid4().hex[:6]}")


def gateway_environment(stack, **settings: str) -> dict[str, str]:
    return {**stack.environment("gateway"), **settings}


@pytest.fixture(scope="module")
def limited(stack, certificate) -> Gateway:
    """A second gateway of the stack: HTTPS, and small limits."""
    cert, key = certificate
    port = free_port()
    log = stack.logs / f"gateway-limited-{port}.log"
    env = gateway_environment(stack, API_PORT=str(port), API_TLS_CERT=str(cert), API_TLS_KEY=str(key), **LIMITED)
    with open(log, "ab") as output:
        process = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    gateway = Gateway(f"https://127.0.0.1:{port}", port, cert, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{gateway.url}/health", verify=tls_to(gateway), timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the limited gateway did not become healthy"
            time.sleep(0.1)
        yield gateway
    finally:
        stop_process(process)


@pytest.fixture
async def user_token(api):
    """A fresh `user` token (revoked afterwards): its name, account and secret."""
    made = []

    async def make(account: str = "acct-limits") -> tuple[str, str, str]:
        name = f"lim-{uuid.uuid4().hex[:8]}"
        response = await api.post("/admin/tokens", json={"name": name, "account": account})
        assert response.status_code == 201, response.text
        made.append(name)
        return name, account, response.json()["token"]

    yield make
    for name in made:
        await api.delete(f"/admin/tokens/{name}")


async def raw_exchange(port: int, chunks: list[bytes], pause: float = 0.0, tls: ssl.SSLContext | None = None,
                       timeout: float = 30.0) -> tuple[bytes, float]:
    """Send `chunks` on a connection of its own, `pause` s apart (a trickling client), until the
    server closes it; what it answered and how long the connection lived."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname="127.0.0.1" if tls else None)
    answer = asyncio.ensure_future(reader.read())  # everything, until the server closes
    try:
        async with asyncio.timeout(timeout):
            for chunk in chunks:
                if answer.done():  # answered and closed: sending more would only reset the connection
                    break
                writer.write(chunk)
                await writer.drain()
                await asyncio.wait([answer], timeout=pause)  # the client's pace; over at once if answered
            return await answer, time.monotonic() - started
    finally:
        answer.cancel()
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def tls_to(gateway: Gateway) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(gateway.cert))


# ---- sizes ----------------------------------------------------------------------------------

async def test_a_body_over_the_limit_is_413_whether_announced_or_chunked(api):
    too_big = b"x" * (MAX_BODY_BYTES + 1)
    announced = await api.post("/jobs/submit", content=too_big, headers={"Content-Type": "application/json"})
    assert announced.status_code == 413 and isinstance(announced.json()["detail"], str)

    async def chunks():  # no Content-Length: counted as it comes
        for start in range(0, len(too_big), 1024 * 1024):
            yield too_big[start:start + 1024 * 1024]

    chunked = await api.post("/jobs/submit", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and isinstance(chunked.json()["detail"], str)
    assert (await api.get("/")).status_code == 200  # and the gateway goes on


async def test_a_head_over_the_limit_is_431_whole_or_trickled_and_one_under_it_passes(api, stack):
    big = "a" * MAX_HEAD_BYTES
    response = await api.get("/", headers={"X-Padding": big})
    assert response.status_code == 431 and "KiB" in response.json()["detail"]
    many = {f"X-Padding-{n}": "b" * 1000 for n in range(MAX_HEAD_BYTES // 1000 + 1)}
    assert (await api.get("/", headers=many)).status_code == 431
    assert (await api.get("/", headers={"X-Padding": big[:MAX_HEAD_BYTES // 2]})).status_code == 200
    # A head that never ends is refused once it is too large, not buffered for ever.
    endless = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"c" * MAX_HEAD_BYTES  # no end of the head
    answer, _ = await raw_exchange(stack.config.api_port, [endless])
    assert status_of(answer) == 431 and b'{"detail":' in answer
    assert (await api.get("/")).status_code == 200


async def test_a_submit_pipelined_before_an_oversized_request_gets_its_own_answer(api, stack):
    body = msgspec.json.encode(job(stack, "true\n", name=f"pipelined-{uuid.uuid4().hex[:6]}"))
    submit_request = (b"POST /jobs/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + stack.token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body)
    oversize = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * MAX_HEAD_BYTES + b"\r\n\r\n"
    answer, _ = await raw_exchange(stack.config.api_port, [submit_request + oversize])
    first, _, second = answer.partition(b"HTTP/1.1 431 ")
    assert status_of(first) == 201 and second, answer  # the submit's answer first, then the refusal
    job_id = msgspec.json.decode(first.split(b"\r\n\r\n", 1)[1])["job_id"]
    assert (await api.get(f"/jobs/query/{job_id}")).status_code == 200


# ---- rate limits ---------------------------------------------------------------------------

async def test_a_user_token_over_its_rate_gets_429_with_retry_after(limited, user_token, stack):
    *_, alice_token = await user_token()
    *_, bob_token = await user_token()
    async with limited.client(alice_token) as alice, limited.client(bob_token) as bob, \
            limited.client(stack.token) as admin:
        statuses = [(await alice.get("/jobs", params={"limit": 1})).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        refused = await alice.get("/jobs")
        assert refused.status_code == 429 and "retry in" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["x-request-id"]
        assert (await bob.get("/jobs", params={"limit": 1})).status_code == 200  # a bucket per token
        assert (await alice.get("/health")).status_code == 200  # probes are never limited
        assert [(await admin.get("/jobs", params={"limit": 1})).status_code for _ in range(20)] == [200] * 20

        async def allowed_again():
            return (await alice.get("/jobs", params={"limit": 1})).status_code == 200

        await eventually(allowed_again, timeout=10, what="alice's bucket to refill")


async def test_requests_without_a_valid_token_are_limited_per_address(limited, stack, user_token):
    address = next(ADDRESSES)
    *_, secret = await user_token()
    async with limited.client("not-a-token", source=address) as guesser, \
            limited.client(stack.token, source=address) as admin, limited.client(secret, source=address) as user, \
            limited.client(source=address) as anyone, limited.client() as elsewhere:
        statuses = [(await guesser.get("/jobs")).status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        assert (await anyone.get("/")).status_code == 429  # public routes count against the address too
        # Valid tokens from the same address are served: bad-token spam cannot lock them out.
        assert (await admin.get("/jobs", params={"limit": 1})).status_code == 200
        assert (await user.get("/jobs", params={"limit": 1})).status_code == 200
        assert (await elsewhere.get("/")).status_code == 200  # other addresses are not limited

        async def address_served():
            return (await anyone.get("/")).status_code == 200

        await eventually(address_served, timeout=10, what="the address's bucket to refill")


async def test_a_client_cannot_pick_its_address_with_x_forwarded_for(limited):
    # From 127.0.0.1, which uvicorn's own default trusts to name the client.
    async with limited.client("not-a-token") as guesser:
        statuses = [(await guesser.get("/jobs", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status_code
                    for n in range(6)]
        # One bucket for them all (what is left of it after the tests before): a fresh address each
        # time would never run out, and six requests are more than a full bucket of five.
        assert set(statuses) <= {401, 429} and 429 in statuses, statuses

        async def served():
            return (await guesser.get("/")).status_code == 200

        await eventually(served, timeout=10, what="127.0.0.1's bucket to refill")


# ---- slow clients, too many connections -----------------------------------------------------

async def test_a_trickling_client_is_cut_off_while_others_are_served(limited, stack):
    port, tls = limited.port, tls_to(limited)
    head = (b"POST /jobs/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + stack.token.encode() + b"\r\n")
    trickled_head = raw_exchange(port, [head] + [b"X-Slow: 1\r\n"] * 200, pause=0.1, tls=tls)
    trickled_body = raw_exchange(port, [head + b"Content-Length: 1000\r\n\r\n"] + [b" "] * 200, pause=0.1, tls=tls)
    silent = raw_exchange(port, [], tls=tls)
    slow = [asyncio.ensure_future(exchange) for exchange in (trickled_head, trickled_body, silent)]
    async with limited.client(stack.token) as admin:
        while not all(exchange.done() for exchange in slow):  # the others are served meanwhile
            assert (await admin.get("/jobs", params={"limit": 1})).status_code == 200
    for answer, lived in [exchange.result() for exchange in slow]:
        assert status_of(answer) == 408 and b"2 s" in answer
        assert 1.5 < lived < 15, lived  # cut off after API_REQUEST_TIMEOUT_SECONDS, well before 200 x 0.1 s


async def test_a_connection_kept_open_with_blank_lines_is_closed(limited):
    # Bare CRLFs between requests start no request, and any byte stops uvicorn's keep-alive timer.
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    answer, lived = await raw_exchange(limited.port, [health] + [b"\r\n"] * 100, pause=0.2, tls=tls_to(limited),
                                       timeout=60)
    assert status_of(answer) == 200 and answer.count(b"HTTP/1.1 ") == 1  # closed without a 408
    assert lived < 15, lived  # API_REQUEST_TIMEOUT_SECONDS after the answer, well before 100 x 0.2 s


async def test_connections_beyond_the_limit_get_503(limited, stack):
    async with limited.client(stack.token, limits=httpx.Limits(max_connections=20)) as admin:
        assert (await admin.get("/health")).status_code == 200
        streams = []
        try:
            # Each open /events stream holds a connection; the next one makes API_MAX_CONNECTIONS.
            for _ in range(int(LIMITED["API_MAX_CONNECTIONS"]) - 1):
                stream = admin.stream("GET", "/events")
                response = await stream.__aenter__()
                assert response.status_code == 200
                streams.append(stream)
            async with limited.client(stack.token) as other:
                assert (await other.get("/health")).status_code == 503
        finally:
            for stream in streams:
                await stream.__aexit__(None, None, None)

        async def served():
            async with limited.client(stack.token) as fresh:
                return (await fresh.get("/health")).status_code == 200

        await eventually(served, what="the connections to be closed")


# ---- HTTPS ------------------------------------------------------------------------------------

async def test_https_is_served_and_plain_http_is_not(limited):
    async with limited.client() as client:
        assert (await client.get("/")).json()["service"] == "SCNS-Conductor API"
    async with httpx.AsyncClient(timeout=10) as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://127.0.0.1:{limited.port}/")
    async with httpx.AsyncClient(timeout=10) as unverified:  # nobody's CA vouches for a self-signed certificate
        with pytest.raises(httpx.ConnectError):
            await unverified.get(f"{limited.url}/")


@pytest.mark.parametrize("settings, message", [
    ({"API_TLS_CERT": "CERT"}, "both API_TLS_CERT and API_TLS_KEY"),
    ({"API_TLS_KEY": "KEY"}, "both API_TLS_CERT and API_TLS_KEY"),
    ({"API_TLS_CERT": "CERT", "API_TLS_KEY": "/no/such/key.pem"}, "cannot load API_TLS_CERT"),
    ({"API_TLS_CERT": "KEY", "API_TLS_KEY": "KEY"}, "cannot load API_TLS_CERT"),
])
def test_the_gateway_refuses_to_start_with_an_unusable_tls_configuration(stack, certificate, settings, message):
    cert, key = certificate
    files = {"CERT": str(cert), "KEY": str(key)}
    env = gateway_environment(stack, API_PORT=str(free_port()),
                              **{name: files.get(value, value) for name, value in settings.items()})
    ran = subprocess.run([sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert ran.returncode != 0 and message in ran.stderr, ran.stderr


# ---- audit, credentials ------------------------------------------------------------------------

async def test_who_submitted_and_who_cancelled_is_in_the_jobs_history(api, stack, user_token):
    name, account, secret = await user_token("acct-audit")

    async def submitted_with(token: str) -> str:
        async with httpx.AsyncClient(base_url=stack.config.api_url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as user:
            return await submit(user, job(stack, "sleep 3071\n", account=account))

    async def history(job_id: str) -> dict:
        async def cancel_recorded():
            events = {e["type"]: e["data"] for e in (await api.get(f"/jobs/{job_id}/events")).json()["events"]}
            return events if "JobCancelRequested" in events else None

        return await eventually(cancel_recorded, what="the cancel request in the job's history")

    job_id = await submitted_with(secret)
    assert (await api.post(f"/jobs/cancel/{job_id}")).status_code == 200
    events = await history(job_id)
    token_id = hashlib.sha256(secret.encode()).hexdigest()[:12]
    assert events["JobSubmitted"]["submitted_by"] == {"token": name, "account": account, "role": "user",
                                                      "token_id": token_id}
    assert events["JobCancelRequested"]["requested_by"] == {"token": "admin", "account": "*", "role": "admin",
                                                            "token_id": None}  # no hash of SCNS_ADMIN_TOKEN goes out
    # Revoked, its name is free again: the token that takes it is told apart by its id.
    assert (await api.delete(f"/admin/tokens/{name}")).status_code == 200
    again = await api.post("/admin/tokens", json={"name": name, "account": account})
    assert again.status_code == 201, again.text
    job_id = await submitted_with(again.json()["token"])
    assert (await api.post(f"/jobs/cancel/{job_id}")).status_code == 200
    submitted_by = (await history(job_id))["JobSubmitted"]["submitted_by"]
    assert submitted_by["token"] == name and submitted_by["token_id"] not in (None, token_id)


async def test_tokens_never_reach_the_gateways_logs(api, stack, limited, user_token):
    *_, secret = await user_token()
    wrong = f"wrong-{uuid.uuid4().hex}"
    for token in (stack.token, secret, wrong):
        async with httpx.AsyncClient(base_url=stack.config.api_url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            await client.get("/jobs", params={"limit": 1})
            await client.post("/jobs/submit", content=b"{not json")
            await client.get("/jobs/query/not-a-number")
            await client.get("/", headers={"X-Padding": "p" * MAX_HEAD_BYTES})  # 431: refused below the app
        # A request uvicorn cannot even parse, carrying the token.
        unparsable = f"GET / HTTP/1.1\r\nAuthorization: Bearer {token}\r\nBad Header Line\r\n\r\n".encode()
        await raw_exchange(stack.config.api_port, [unparsable])
        await raw_exchange(limited.port, [unparsable], tls=tls_to(limited))
        unfinished = f"GET /jobs HTTP/1.1\r\nAuthorization: Bearer {token}\r\n".encode()  # 408
        answer, _ = await raw_exchange(limited.port, [unfinished], tls=tls_to(limited))
        assert status_of(answer) == 408
        async with limited.client(token, source=next(ADDRESSES)) as client:
            for _ in range(7):  # into 429 (and 401 for the wrong one)
                await client.get("/jobs", params={"limit": 1})
    for log in (stack.logs / "gateway.log", limited.log):
        text = log.read_text(errors="replace")
        assert "Invalid HTTP request" in text  # the logs were written: the requests above reached them
        for token in (stack.token, secret, wrong):
            assert token not in text, f"a token is in {log.name}"
