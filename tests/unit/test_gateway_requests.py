"""Requests through the gateway's ASGI app with in-memory adapters: what a query and a submit do
(and skip) per request — no trace work when tracing is off, no address parsing for a valid token
— with the rate limits and errors unchanged."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest

from services.gateway import app as gateway_app
from services.gateway.adapters.nodes import NodeDirectory
from services.gateway.core.auth import BOOTSTRAP_ADMIN, NotAuthenticated, Principal
from services.gateway.core.ratelimit import RateLimits
from services.gateway.core.views import JobRecord
from shared.config import Settings
from shared.bus import Delivered
from shared.events import JobSpec, JobSubmitted, NodeRegistered

ADMIN = "a" * 40
USER = "u" * 40
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
JOB = JobRecord(job_id=5, name="n", account="acct", partition="default", state="PENDING", cwd="/w",
                stdout_path="/w/o", stderr_path="/w/e", ntasks_per_node=1, cpus_per_task=1, time_limit_s=600,
                exclusive=False, data_source="API", submit_time=NOW,
                traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


class InMemoryJobs:
    def __init__(self) -> None:
        self.heads = {"default": JOB.job_id}

    async def job_in_queue(self, job_id: int):
        return (JOB, True) if job_id == JOB.job_id else None

    async def queue_heads(self):
        return self.heads


UNPROJECTED = JobSubmitted(spec=JobSpec(account="acct", name="fresh", partition="default", cwd="/w", script="true\n",
                                         stdout="%j.out", stderr="%j.err", time_limit_s=60), submitted_at=NOW)


class InMemoryLogs:
    async def read(self, job):
        return "out\n", "", True


class InMemoryTokens:
    async def authenticate(self, token: str) -> Principal:
        if token == ADMIN:
            return BOOTSTRAP_ADMIN
        if token == USER:
            return Principal("someone", "acct", "user")
        raise NotAuthenticated("Invalid or revoked token")


class Connected:
    is_connected = True


class InMemoryEvents:
    nc = Connected()

    def __init__(self) -> None:
        self.published: list[tuple[object, dict]] = []

    async def read(self, seq: int):
        # Job 5 is projected; job 7 is not yet: only the log knows it.
        return Delivered(seq, "scns.submit", UNPROJECTED) if seq == 7 else None

    async def publish(self, event, msg_id, timeout=None, headers=None):
        self.published.append((event, headers))
        return 1000 + len(self.published), False


def gateway_for(settings: Settings, traced: bool = False) -> gateway_app.Gateway:
    nodes = NodeDirectory()
    nodes.apply(NodeRegistered(node="n1", cpus=2, memory_mb=4096, partitions=["default"], arch="x86_64",
                               registered_at=NOW))
    nodes.ready.set()
    return gateway_app.Gateway(settings, InMemoryEvents(), InMemoryJobs(), InMemoryLogs(), nodes, InMemoryTokens(),
                               None, RateLimits(settings.rate_limit_per_second, settings.rate_limit_burst), traced)


class Client:
    def __init__(self, tmp_path, traced: bool = False, burst: int = 1000) -> None:
        self.settings = Settings(admin_token=ADMIN, job_roots=[str(tmp_path)], rate_limit_burst=burst)
        app = gateway_app.create_app(self.settings)
        app.state.gateway = self.gateway = gateway_for(self.settings, traced)
        self.asgi = gateway_app.with_request_headers(app)
        self.root = tmp_path

    async def request(self, method: str, path: str, token: str | None = ADMIN, body: bytes = b"") -> tuple[int, dict]:
        headers = [(b"host", b"gateway")] + ([(b"authorization", f"Bearer {token}".encode())] if token else [])
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await self.asgi(scope, receive, send)
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], msgspec.json.decode(payload) if payload else {}

    def submission(self) -> bytes:
        return msgspec.json.encode({"job": {"account": "acct", "name": "j", "partition": "default",
                                            "current_working_directory": str(self.root / "job"),
                                            "standard_output": "%j.out", "standard_error": "%j.err",
                                            "time_limit": "5"}, "script": "true\n"})


def refuse(*args, **kwargs):
    raise AssertionError("called although tracing is off")


@pytest.fixture
def untraced(monkeypatch):
    for name in ("linked_to_job", "headers_of", "tracer"):
        monkeypatch.setattr(gateway_app, name, refuse)


async def test_with_tracing_off_a_query_and_a_submit_do_no_trace_work(tmp_path, untraced):
    client = Client(tmp_path)
    status, body = await client.request("GET", "/jobs/query/5")
    assert status == 200 and body["job_log"]["stdout"] == "out\n" and body["detail"]["reason"] == "Priority"
    assert body["time"]["submit_time"] == body["time"]["eligible_time"] == "2026-01-01T00:00:00Z"
    status, body = await client.request("POST", "/jobs/submit", body=client.submission())
    assert (status, body) == (201, {"job_id": "1001"})
    [(submitted, headers)] = client.gateway.events.published
    assert isinstance(submitted, JobSubmitted) and submitted.traceparent is None and headers == {}


@pytest.mark.parametrize(("heads", "reason"), [({"default": 5}, "Priority"), ({}, "Resources")])
async def test_a_job_not_projected_yet_is_read_from_the_log_and_placed_behind_the_queue_head(tmp_path, heads, reason):
    client = Client(tmp_path)
    client.gateway.jobs.heads = heads
    status, body = await client.request("GET", "/jobs/query/7")
    assert status == 200 and (body["detail"]["job_name"], body["state"]) == ("fresh", "PENDING")
    assert body["detail"]["reason"] == reason
    assert (await client.request("GET", "/jobs/query/8"))[0] == 404


async def test_with_tracing_on_a_submission_carries_its_trace(tmp_path, monkeypatch):
    monkeypatch.setattr(gateway_app, "headers_of", lambda: {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    client = Client(tmp_path, traced=True)
    status, _ = await client.request("POST", "/jobs/submit", body=client.submission())
    [(submitted, headers)] = client.gateway.events.published
    assert status == 201 and submitted.traceparent == headers["traceparent"] == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


async def test_a_valid_token_is_not_counted_by_its_address_and_bad_ones_still_are(tmp_path, monkeypatch):
    client = Client(tmp_path, burst=3)
    parse = gateway_app.address_key
    monkeypatch.setattr(gateway_app, "address_key", refuse)
    for _ in range(5):  # more than the address's burst: an admin's requests are never limited
        assert (await client.request("GET", "/jobs/query/5"))[0] == 200
    monkeypatch.setattr(gateway_app, "address_key", parse)
    statuses = [(await client.request("GET", "/jobs/query/5", token="wrong"))[0] for _ in range(4)]
    assert statuses == [401, 401, 401, 429]  # the address's burst of 3, then refused
    assert (await client.request("GET", "/jobs/query/5", token=USER))[0] == 200  # a valid token still goes through
    assert (await client.request("GET", "/jobs/query/6", token=USER))[0] == 404
