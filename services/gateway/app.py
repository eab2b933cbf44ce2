"""The REST API (API.md): thin handlers over the event log, the read model, the nodes and tokens.

The gateway only records requests: a submit is a `JobSubmitted` acked by JetStream before the
reply (its stream sequence is the job id); a cancel is a `JobCancelRequested`. Queries read the
read model, and the log itself for a job the projection has not reached yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.trace import SpanKind

from services.gateway.adapters.jobs import PostgresJobView, read_pool
from services.gateway.adapters.logs import NatsLogReader
from services.gateway.adapters.nodes import NodeDirectory
from services.gateway.adapters.tokens import NatsTokenStore, TokenNameTaken
from services.gateway.core import views, wire
from services.gateway.core.auth import (
    ANONYMOUS,
    RESERVED_NAMES,
    Forbidden,
    NotAuthenticated,
    Principal,
    bearer_token,
    check_account,
    require_admin,
    token_hash,
    visible_account,
)
from services.gateway.core.health import ProjectionWatch
from services.gateway.core.metrics import Snapshot as MetricsSnapshot
from services.gateway.core.metrics import render as render_metrics
from services.gateway.adapters.otel_metrics import observe
from services.gateway.core.openapi import openapi_document
from services.gateway.core.ratelimit import RateLimited, RateLimiter, RateLimits, address_key
from services.gateway.core.stream import job_of, start_after, visible
from services.gateway.core.validation import (
    MAX_BODY_BYTES,
    RequestInvalid,
    TokenRequest,
    decode_body,
    decode_submit,
    error,
    parse_job_id,
    parse_listing,
    to_spec,
)
from services.gateway.core.views import JobRecord, pending_reason, query_response, waits_behind
from services.gateway.errors import DependencyDown, JobNotFound
from shared.bus import NATS_UNAVAILABLE, JetStreamEventLog, decode_message
from shared.rpc import REBUILD_SUBJECT, RebuildReport
from shared.catalogue import rendered as rendered_catalogue
from shared.config import Settings
from shared.telemetry import TRACEPARENT, context_of, headers_of, tracer
from shared.events import (
    STREAM,
    TERMINAL_STATES,
    Actor,
    Event,
    JobCancelRequested,
    JobSpec,
    JobSubmitted,
    NodeDrained,
    NodeResumed,
    job_subjects,
)

log = logging.getLogger(__name__)

VERSION = "0.1.0"
LIVE_SCHEMA = "scns"  # the projector's read model (it owns the schema; we only read it)
REBUILD_TIMEOUT_S = 3600.0
NODES_READY_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 3.0  # then 503; a submission stored later is withdrawn (JobSubmitted.accept_until)
METRICS_REFRESH_S = 10.0  # how fresh the figures OpenTelemetry's metric reader exports are
MAX_STREAM_ACCOUNTS = 100_000  # job id -> account entries one /events stream remembers
STREAM_RECHECK_S = 5.0  # an open /events stream re-checks its token this often (as events come)
METRICS_MAX_AGE_S = 5.0  # /metrics answers from a snapshot this fresh: one computation at a time
MIN_ADMIN_TOKEN_CHARS = 32
MAX_VOID_SUBMISSIONS = 3  # attempts at a submission for one request, each void if stored too late
HEALTH_TIMEOUT_S = 2.0
MAX_PROJECTION_LAG = 10_000  # events; beyond this /health says the read model is behind
DASHBOARD_JOBS = 20
TOKEN_ID_HEX_DIGITS = 12  # of a token's SHA-256, in the audit trail: tells tokens apart, finds none
PUBLIC_PATHS = frozenset({"/", "/health", "/metrics", "/openapi.json", "/asyncapi.json", "/docs", "/redoc"})
UNLIMITED_PATHS = frozenset({"/health", "/metrics"})  # probes and scrapes are never rate limited


@dataclass
class Gateway:
    """What the handlers use; opened in the lifespan."""

    settings: Settings
    events: JetStreamEventLog
    jobs: PostgresJobView
    logs: NatsLogReader
    nodes: NodeDirectory
    tokens: NatsTokenStore
    projection: ProjectionWatch
    limits: RateLimits
    traced: bool = False  # else the trace calls below are skipped: no-ops, but a few microseconds each
    last_metrics: MetricsSnapshot | None = None
    metrics_at: float = 0.0
    metrics_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @cached_property
    def job_roots(self) -> list[str]:
        """Resolved once: it costs a few system calls that every submit would pay again."""
        return self.settings.roots()

    async def job(self, job_id: int) -> JobRecord:
        if (record := await self.jobs.job(job_id)) is not None:
            return record
        return await self.unprojected_job(job_id)

    async def unprojected_job(self, job_id: int) -> JobRecord:
        """Acknowledged but not projected yet: the log itself knows the job."""
        delivered = await self.nats(self.events.read(job_id), "event log")
        if delivered is None or not isinstance(delivered.event, JobSubmitted):
            raise JobNotFound(job_id)
        submitted = delivered.event
        return JobRecord.submitted(job_id, submitted.spec, submitted.submitted_at, submitted.traceparent)

    async def job_for(self, principal: Principal, job_id: int, action: str) -> JobRecord:
        job = await self.job(job_id)
        check_account(principal, job.account, action)
        return job

    async def queried_job(self, principal: Principal, job_id: int) -> tuple[JobRecord, str]:
        """A job and why it waits, for a query: one read of the read model once it is projected."""
        if (found := await self.jobs.job_in_queue(job_id)) is None:
            # A query just after the submit: the log and the read model's queue heads, read at once.
            job, heads = await asyncio.gather(self.unprojected_job(job_id), self.jobs.queue_heads())
            found = job, waits_behind(job, heads)
        job, jobs_ahead = found
        check_account(principal, job.account, "query")
        return job, pending_reason(job, self.nodes.partition_live(job.partition), jobs_ahead)

    async def publish(self, event: Event, msg_id: str | None) -> tuple[int, bool]:
        """(sequence, whether the msg id had been published already)."""
        # Refuse at once while disconnected: a publish buffered for the reconnect could land
        # after we answered 503, and the client would retry it into a second job.
        if not self.events.nc.is_connected:
            raise DependencyDown("NATS (event log) is unavailable: not connected")
        return await self.nats(self.events.publish(event, msg_id, timeout=PUBLISH_TIMEOUT_S,
                                                   headers=self.trace_headers()), "event log")

    async def submit(self, spec: JobSpec, key: str | None, by: Actor) -> int:
        """Publish a submission by `by`; the job id. A retry (same idempotency key) of a submission that
        reached the log only after we had answered 503 gets a job of its own: that one is void."""
        msg_id = submission_msg_id(spec.account, key) if key else None
        for _ in range(MAX_VOID_SUBMISSIONS):
            now = utcnow()  # each attempt has its own deadline, as the first one had
            submitted = JobSubmitted(spec=spec, submitted_at=now, accept_until=now + timedelta(seconds=PUBLISH_TIMEOUT_S),
                                     traceparent=self.trace_headers().get(TRACEPARENT), submitted_by=by)
            job_id, duplicate = await self.publish(submitted, msg_id)
            if not (duplicate and msg_id and await self.void_submission(job_id)):
                return job_id
            msg_id = f"{msg_id}:after:{job_id}"  # the same for every later retry: still idempotent
        raise DependencyDown("NATS (event log) kept storing this submission too late to be valid: retry later")

    def trace_headers(self) -> dict[str, str]:
        return headers_of() if self.traced else {}

    def linked_to_job(self, job: JobRecord, action: str) -> None:
        if self.traced:
            linked_to_job(job, action)

    async def visible_events(self, start_seq: int, viewer: str | None,
                             still_valid: Callable[[], Awaitable[bool]]) -> AsyncIterator[ServerSentEventMessage]:
        """The log from `start_seq` on, as server-sent events, without what `viewer` may not see;
        the caller's token is checked again every so often."""
        accounts: dict[int, str | None] = {}  # job id -> account, as learnt from the submissions
        checked = time.monotonic()
        async for msg in self.events.replay(start_seq):
            if time.monotonic() - checked > STREAM_RECHECK_S:
                if not await still_valid():
                    return
                checked = time.monotonic()
            delivered = decode_message(msg)
            if delivered is None:
                continue
            job_id = job_of(delivered.event, delivered.seq)
            if viewer is not None and job_id is not None and job_id not in accounts:
                if len(accounts) > MAX_STREAM_ACCOUNTS:
                    accounts.clear()
                submitted = delivered if isinstance(delivered.event, JobSubmitted) else await self.events.read(job_id)
                accounts[job_id] = submitted.event.spec.account if submitted and isinstance(
                    submitted.event, JobSubmitted) else None
            if visible(delivered.event, viewer, accounts.get(job_id)):
                yield ServerSentEventMessage(data=msg.data.decode(), event=type(delivered.event).__name__,
                                             id=delivered.seq)

    async def fresh_metrics(self) -> MetricsSnapshot:
        """A snapshot at most METRICS_MAX_AGE_S old: concurrent scrapes share one computation."""
        async with self.metrics_lock:
            if self.last_metrics is None or time.monotonic() - self.metrics_at > METRICS_MAX_AGE_S:
                await self.metrics()
            return self.last_metrics

    async def metrics(self) -> MetricsSnapshot:
        queued, running, node_cpus, submitted, finished, wait, run = await self.jobs.metrics()
        try:
            lag = max(0, await asyncio.wait_for(self.events.last_seq(), HEALTH_TIMEOUT_S) - await self.jobs.position())
            executors = await asyncio.wait_for(self.events.js.consumers_info(STREAM), HEALTH_TIMEOUT_S)
            redeliveries = sum(info.num_redelivered or 0 for info in executors if info.name.startswith("executor-"))
        except (*NATS_UNAVAILABLE, asyncio.TimeoutError):
            lag = redeliveries = None  # the read model's figures are still worth giving
        self.last_metrics = MetricsSnapshot(queued, running, node_cpus, submitted, finished, wait, run, lag,
                                            redeliveries)
        self.metrics_at = time.monotonic()
        return self.last_metrics

    async def keep_metrics_fresh(self, every_s: float) -> None:
        """For OpenTelemetry's metric reader, whose callbacks cannot wait on the read model."""
        while True:
            try:
                await self.fresh_metrics()
            except Exception as error:  # the figures go stale, the refresher goes on
                log.warning("metrics not refreshed: %s", error)
            await asyncio.sleep(every_s)

    @staticmethod
    def limit(limiter: RateLimiter, key: str, who: str) -> None:
        """Count a request of `key` (`who` names it in the refusal) against `limiter`; RateLimited
        when there is no room."""
        waiting = limiter.take(key, time.monotonic())
        if waiting:
            raise RateLimited(f"too many requests from {who}: at most {limiter.rate:g} a second, in bursts "
                              f"of up to {limiter.burst}; retry in {waiting:.1f} s", waiting)

    async def void_submission(self, job_id: int) -> bool:
        delivered = await self.nats(self.events.read(job_id), "event log")
        return (delivered is not None and isinstance(delivered.event, JobSubmitted)
                and delivered.event.void_if_stored_at(delivered.stored_at))

    @staticmethod
    async def nats(operation, what: str):
        try:
            return await operation
        except NATS_UNAVAILABLE as error:
            raise DependencyDown(f"NATS ({what}) is unavailable: {type(error).__name__}") from error


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def linked_to_job(job: JobRecord, action: str) -> None:
    """Record the request (a trace of its own) as linked to the job's trace."""
    job_context = context_of({TRACEPARENT: job.traceparent} if job.traceparent else None)
    job_span = trace.get_current_span(job_context).get_span_context()
    links = [trace.Link(job_span)] if job_span.is_valid else []
    tracer().start_span(f"{action} job", links=links, attributes={"scns.job_id": job.job_id}).end()


def submission_msg_id(account: str, key: str) -> str:
    """The JetStream msg id of an account's submission with an Idempotency-Key (hashed: no account
    and key can be arranged to collide with another's)."""
    return "submit:" + hashlib.sha256(f"{account}\0{key}".encode()).hexdigest()[:40]


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def principal_of(request: Request) -> Principal:
    return request.state.principal


def actor_of(request: Request) -> Actor:
    """Who makes the request, as the events record it (the audit trail)."""
    principal = principal_of(request)
    return Actor(token=principal.name, account=principal.account, role=principal.role,
                 token_id=request.state.token_id)


def audit_token_id(principal: Principal, hashed: str) -> str | None:
    """The short id of a token in the audit trail; none for the reserved names, which are never
    reused, and whose secret (SCNS_ADMIN_TOKEN) an operator chose: it may be guessable, so no hash
    of it leaves the gateway."""
    return None if principal.name in RESERVED_NAMES else hashed[:TOKEN_ID_HEX_DIGITS]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=msgspec.json.encode(content), status_code=status_code, media_type="application/json",
                    headers=headers)


# ---- jobs ------------------------------------------------------------------------------------

@post("/jobs/submit", status_code=201)
async def submit(request: Request) -> Response:
    gateway, principal = gateway_of(request), principal_of(request)
    body = decode_submit(await request.body())
    check_account(principal, body.job.account, "submit")
    try:
        await asyncio.wait_for(gateway.nodes.ready.wait(), NODES_READY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise DependencyDown("NATS (event log): the node directory has not been read yet") from None
    spec = to_spec(body, gateway.nodes.partitions(), gateway.job_roots)
    # The job's trace begins here: this span's context goes into the submission (and its headers).
    with (tracer().start_as_current_span("publish JobSubmitted", kind=SpanKind.PRODUCER) if gateway.traced
          else nullcontext(trace.INVALID_SPAN)) as span:
        job_id = await gateway.submit(spec, request.headers.get("idempotency-key"), actor_of(request))
        span.set_attribute("scns.job_id", job_id)
    return json_response(wire.SubmitResponse(job_id=str(job_id)), 201)


@get("/jobs/query/{job_id:str}")
async def query(request: Request, job_id: FromPath[str]) -> Response:
    gateway = gateway_of(request)
    job, reason = await gateway.queried_job(principal_of(request), parse_job_id(job_id))
    gateway.linked_to_job(job, "query")
    stdout, stderr, available = await gateway.logs.read(job)
    headers = {} if available else {"X-Log-Unavailable": job.node}
    return json_response(query_response(job, stdout, stderr, reason, utcnow()), headers=headers)


@post("/jobs/cancel/{job_id:str}", status_code=200)
async def cancel(request: Request, job_id: FromPath[str]) -> Response:
    gateway = gateway_of(request)
    job = await gateway.job_for(principal_of(request), parse_job_id(job_id), "cancel")
    gateway.linked_to_job(job, "cancel")
    if job.state not in TERMINAL_STATES:
        cancel_requested = JobCancelRequested(job_id=job.job_id, requested_at=utcnow(), requested_by=actor_of(request))
        await gateway.publish(cancel_requested, f"cancel:{job.job_id}")
    return json_response(wire.CancelResponse(msg="取消成功"))


@get("/jobs")
async def list_jobs(request: Request) -> Response:
    gateway = gateway_of(request)
    listing = parse_listing(dict(request.query_params))
    account = visible_account(principal_of(request), listing.account)
    page = await gateway.jobs.jobs(account=account, state=listing.state, partition=listing.partition,
                                   before=listing.before, limit=listing.limit + 1)
    more = len(page) > listing.limit
    page = page[:listing.limit]
    next_cursor = views.encode_cursor(page[-1].job_id) if more else None
    return json_response(wire.JobList(jobs=[views.job_summary(job) for job in page], next_cursor=next_cursor))


@get("/jobs/{job_id:str}/events")
async def job_history(request: Request, job_id: FromPath[str]) -> Response:
    gateway = gateway_of(request)
    job = await gateway.job_for(principal_of(request), parse_job_id(job_id), "read the events")
    submitted = await gateway.nats(gateway.events.read(job.job_id), "event log")
    later = await gateway.nats(gateway.events.history(job_subjects(job.job_id), job.job_id + 1), "event log")
    entries = [(d.seq, d.stored_at, d.event) for d in [submitted, *later] if d is not None]
    return json_response(views.job_events(job.job_id, entries))


@get("/events")
async def event_stream(request: Request) -> ServerSentEvent:
    """The event stream as server-sent events, for clients that cannot speak NATS: each event's
    `id` is its stream sequence, so a reconnecting client resumes with Last-Event-ID (0: from
    the start); without one, from now on. A user sees its account's jobs and the nodes."""
    gateway, principal = gateway_of(request), principal_of(request)
    try:
        after = start_after(request.headers.get("last-event-id"))
    except ValueError as problem:
        raise RequestInvalid([error(["header", "Last-Event-ID"], str(problem),
                                    request.headers.get("last-event-id"))]) from None
    if after is None:
        after = await gateway.nats(gateway.events.last_seq(), "event log")
    viewer = None if principal.is_admin else principal.account

    async def still_valid() -> bool:
        """A token revoked while its stream is open ends the stream."""
        if gateway.settings.auth_disabled:
            return True
        try:
            await gateway.tokens.authenticate(bearer_token(request.headers.get("authorization", "")))
            return True
        except NotAuthenticated:
            return False

    return ServerSentEvent(gateway.visible_events(after + 1, viewer, still_valid))


# ---- cluster ---------------------------------------------------------------------------------

@get("/nodes")
async def nodes(request: Request) -> Response:
    gateway = gateway_of(request)
    records = await gateway.jobs.nodes()
    heartbeats = gateway.nodes.heartbeats
    return json_response(wire.NodeList(nodes=[views.node_view(n, heartbeats.get(n.node_name)) for n in records]))


@get("/dashboard")
async def dashboard(request: Request) -> Response:
    gateway, principal = gateway_of(request), principal_of(request)
    account = None if principal.is_admin else principal.account
    counts = await gateway.jobs.state_counts(account)
    running = await gateway.jobs.jobs(account=account, state="RUNNING", limit=DASHBOARD_JOBS)
    pending = await gateway.jobs.jobs(account=account, state="PENDING", limit=DASHBOARD_JOBS)
    return json_response(views.dashboard(counts, await gateway.jobs.nodes(), running, pending))


@get("/health")
async def health(request: Request) -> Response:
    gateway = gateway_of(request)
    checks: dict[str, str] = {}
    last_seq = None
    try:
        last_seq = await asyncio.wait_for(gateway.events.last_seq(), HEALTH_TIMEOUT_S)
        checks["nats"] = "ok"
    except (*NATS_UNAVAILABLE, asyncio.TimeoutError) as error:
        checks["nats"] = f"NATS (event log) is unavailable: {type(error).__name__}"
    try:
        position = await asyncio.wait_for(gateway.jobs.position(), HEALTH_TIMEOUT_S)
        checks["postgresql"] = "ok"
        if last_seq is not None:
            _, checks["projection"] = gateway.projection.check(last_seq, position, time.monotonic())
    except (DependencyDown, asyncio.TimeoutError) as error:
        checks["postgresql"] = str(error) or "PostgreSQL (read model) did not answer in time"
    healthy = all(value.startswith("ok") for value in checks.values()) and "projection" in checks
    body = wire.Health(status="healthy" if healthy else "unhealthy", service="scns-conductor-api", checks=checks)
    return json_response(body, 200 if healthy else 503)


@get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format: queue depth, running jobs, CPUs per node, submit/finish totals,
    wait and run time histograms, projection lag and executor redeliveries."""
    snapshot = await gateway_of(request).fresh_metrics()
    return Response(content=render_metrics(snapshot), media_type="text/plain; version=0.0.4; charset=utf-8")


@get("/")
async def root() -> Response:
    return json_response(wire.About(service="SCNS-Conductor API", version=VERSION, status="running"))


# ---- tokens (admin) ----------------------------------------------------------------------------

@post("/admin/tokens", status_code=201)
async def create_token(request: Request) -> Response:
    require_admin(principal_of(request))
    gateway = gateway_of(request)
    body = decode_body(await request.body(), TokenRequest)
    record, token = await gateway.nats(gateway.tokens.create(body.name, body.account, body.role), "token store")
    return json_response(wire.TokenCreated(name=record.name, account=record.account, role=record.role, token=token),
                         201)


@get("/admin/tokens")
async def list_tokens(request: Request) -> Response:
    require_admin(principal_of(request))
    gateway = gateway_of(request)
    records = await gateway.nats(gateway.tokens.list(), "token store")
    return json_response(wire.TokenList(tokens=[
        wire.TokenInfo(name=r.name, account=r.account, role=r.role, created_at=views.timestamp(r.created_at))
        for r in records]))


@delete("/admin/tokens/{name:str}", status_code=200)
async def revoke_token(request: Request, name: FromPath[str]) -> Response:
    require_admin(principal_of(request))
    gateway = gateway_of(request)
    if not await gateway.nats(gateway.tokens.revoke(name), "token store"):
        return json_response(wire.ErrorBody(detail=f"no token named {name!r}"), 404)
    return json_response(wire.CancelResponse(msg=f"token {name!r} revoked"))


async def _set_drain(request: Request, name: str, drain: bool) -> Response:
    principal = principal_of(request)
    require_admin(principal)
    gateway = gateway_of(request)
    if name not in gateway.nodes.nodes:
        return json_response(wire.ErrorBody(detail=f"no node named {name!r}"), 404)
    now = utcnow()
    event = (NodeDrained(node=name, by=principal.name, drained_at=now) if drain
             else NodeResumed(node=name, by=principal.name, resumed_at=now))
    await gateway.publish(event, None)
    gateway.nodes.apply(event)  # this gateway's validation and reasons see it at once
    return json_response(wire.CancelResponse(msg=f"node {name!r} {'drained' if drain else 'resumed'}"))


@post("/admin/nodes/{name:str}/drain", status_code=200)
async def drain_node(request: Request, name: FromPath[str]) -> Response:
    """No new jobs on the node; the running ones finish (sinfo's DRAIN)."""
    return await _set_drain(request, name, drain=True)


@post("/admin/nodes/{name:str}/resume", status_code=200)
async def resume_node(request: Request, name: FromPath[str]) -> Response:
    return await _set_drain(request, name, drain=False)


@post("/admin/rebuild", status_code=200)
async def rebuild(request: Request) -> Response:
    """Replay the whole log into a fresh read model and swap it in (queries go on meanwhile)."""
    require_admin(principal_of(request))
    gateway = gateway_of(request)
    reply = await gateway.nats(gateway.events.nc.request(REBUILD_SUBJECT, b"", timeout=REBUILD_TIMEOUT_S),
                               "projector")
    report = msgspec.json.decode(reply.data, type=RebuildReport)
    return json_response(report, 500 if report.error else 200)


# ---- documentation -----------------------------------------------------------------------------

DOCS_PAGE = """<!doctype html><html><head><title>SCNS-Conductor API</title><meta charset="utf-8"/>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"/></head><body>
<div id="ui"></div><script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""
REDOC_PAGE = """<!doctype html><html><head><title>SCNS-Conductor API</title><meta charset="utf-8"/></head><body>
<redoc spec-url="/openapi.json"></redoc><script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js">
</script></body></html>"""


@get("/openapi.json")
async def openapi(request: Request) -> Response:
    return Response(content=request.app.state.openapi, media_type="application/json")


@get("/asyncapi.json")
async def asyncapi(request: Request) -> Response:
    """The event catalogue (docs/events.md): what integrations can follow on NATS."""
    return Response(content=request.app.state.asyncapi, media_type="application/json")


@get("/docs")
async def docs() -> Response:
    return Response(content=DOCS_PAGE, media_type="text/html")


@get("/redoc")
async def redoc() -> Response:
    return Response(content=REDOC_PAGE, media_type="text/html")


# ---- errors, headers, authentication ---------------------------------------------------------

def error_body(status: int, detail: str, headers: dict[str, str] | None = None):
    def handler(_: Request, exc: Exception) -> Response:
        return json_response(wire.ErrorBody(detail=detail or str(exc)), status, headers)

    return handler


def on_invalid(_: Request, exc: RequestInvalid) -> Response:
    return json_response({"detail": exc.errors}, 422)


def on_rate_limited(_: Request, exc: RateLimited) -> Response:
    return json_response(wire.ErrorBody(detail=str(exc)), 429, {"Retry-After": exc.retry_after_header})


def on_http_error(_: Request, exc: HTTPException) -> Response:
    return json_response(wire.ErrorBody(detail=str(exc.detail)), exc.status_code, headers=exc.headers)


def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return json_response(wire.ErrorBody(detail="Internal Server Error"), 500)


def with_request_headers(app: ASGIApp) -> ASGIApp:
    """X-Request-ID (the client's, else a new UUID4) and X-Process-Time on every response.

    Wrapped around the whole application, not a Litestar middleware: those run only for
    matched routes, and a 404 or 405 of the router must carry the headers too.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming[:200] or str(uuid.uuid4())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                    (b"x-process-time", f"{time.perf_counter() - started:.3f}".encode()),
                ]
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def authenticate(request: Request) -> None:
    """Every route but the public ones needs a valid bearer token (unless authentication is off).

    Rate limits: a user token has a bucket of its own; requests without a valid token (public
    routes, missing, unknown or revoked tokens) share their client address's (an IPv6 client's
    /64's), and once that is empty a bad token gets 429 rather than 401. A token is always looked
    up, and a valid one is never refused for its address: a client spamming bad tokens from an
    address it shares with others (loopback, a NAT) slows only itself. Admin tokens are not
    limited: an admin can revoke any token and drain any node, so nothing is won by slowing one,
    and the benchmarks and the operators' tools use it.
    """
    path = request.url.path
    if path in UNLIMITED_PATHS:
        return
    gateway = gateway_of(request)

    def limit_by_address() -> None:  # (the address is parsed only for the requests that count by it)
        address = address_key(request.client.host) if request.client else "unknown"
        gateway.limit(gateway.limits.addresses, address, f"address {address}")

    if path in PUBLIC_PATHS:
        limit_by_address()
        return
    if gateway.settings.auth_disabled:
        request.state.principal, request.state.token_id = ANONYMOUS, None
        return
    try:
        token = bearer_token(request.headers.get("authorization", ""))
        principal = await gateway.tokens.authenticate(token)
    except NotAuthenticated:
        limit_by_address()
        raise
    hashed = token_hash(token)
    if not principal.is_admin:
        gateway.limit(gateway.limits.tokens, hashed, f"token {principal.name!r}")
    request.state.principal, request.state.token_id = principal, audit_token_id(principal, hashed)


def create_asgi_app(settings: Settings, traced: bool = False, metered: bool = False) -> ASGIApp:
    return with_request_headers(create_app(settings, traced, metered))


def span_name_of(scope: Scope) -> tuple[str, dict[str, str]]:
    """A request's span is named by its route ("GET /jobs/query/{job_id:str}"), not its path."""
    route = scope.get("path_template") or scope.get("path", "")
    return f"{scope.get('method', '')} {route}".strip(), {HTTP_ROUTE: route}


def create_app(settings: Settings, traced: bool = False, metered: bool = False) -> Litestar:
    if settings.auth_disabled and not is_loopback(settings.api_host):
        raise ValueError(f"authentication may be off only on loopback, not on {settings.api_host}")
    if not settings.auth_disabled and not settings.admin_token:
        raise ValueError("set SCNS_ADMIN_TOKEN (the bootstrap admin token), or AUTH_DISABLED=true on loopback")
    if settings.admin_token and len(settings.admin_token) < MIN_ADMIN_TOKEN_CHARS:
        # It is looked up like any token, and guessing is slowed per address only: it must be unguessable.
        raise ValueError(f"SCNS_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                         f"(e.g. python3 -c 'import secrets; print(secrets.token_hex(32))')")
    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS OFF: every request to %s:%d acts as admin", settings.api_host,
                    settings.api_port)
    try:
        limits = RateLimits(settings.rate_limit_per_second, settings.rate_limit_burst)
    except ValueError as error:
        raise ValueError(f"RATE_LIMIT_BURST: {error}") from None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        events = await JetStreamEventLog.for_service(settings, "scns-gateway")
        pool = read_pool(settings.database_url, LIVE_SCHEMA)
        await pool.open(wait=False)
        try:
            await events.check_not_behind(await PostgresJobView(pool).position())
        except DependencyDown:
            log.warning("PostgreSQL is not reachable: the log was not checked against the read model")
        tokens = await NatsTokenStore.open(events.js, settings.admin_token, settings.stream_replicas)
        nodes = NodeDirectory()
        follower = asyncio.create_task(nodes.follow(events))
        projection = ProjectionWatch(settings.projection_stall_seconds, MAX_PROJECTION_LAG)
        app.state.gateway = Gateway(settings, events, PostgresJobView(pool), NatsLogReader(events.nc), nodes, tokens,
                                    projection, limits, traced)
        app.state.openapi = msgspec.json.encode(openapi_document(VERSION))
        app.state.asyncapi = rendered_catalogue().encode()
        if metered:
            observe(lambda: app.state.gateway.last_metrics)
            refresher = asyncio.create_task(app.state.gateway.keep_metrics_fresh(METRICS_REFRESH_S))
        try:
            yield
        finally:
            follower.cancel()
            if metered:
                refresher.cancel()
            await pool.close()
            await events.close()

    return Litestar(
        route_handlers=[submit, query, cancel, list_jobs, job_history, nodes, dashboard, health, root,
                        create_token, list_tokens, revoke_token, drain_node, resume_node, rebuild, openapi, asyncapi, docs,
                        event_stream, metrics,
                        redoc],
        lifespan=[lifespan],
        before_request=authenticate,
        exception_handlers={
            RequestInvalid: on_invalid,
            RateLimited: on_rate_limited,
            NotAuthenticated: error_body(401, "", {"WWW-Authenticate": "Bearer"}),
            Forbidden: error_body(403, ""),
            JobNotFound: error_body(404, ""),
            TokenNameTaken: error_body(409, ""),
            DependencyDown: error_body(503, ""),
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        state=State(),
        # Tracing off: not even the middleware runs.
        plugins=[OpenTelemetryPlugin(OpenTelemetryConfig(scope_span_details_extractor=span_name_of,
                                                         exclude=["^/health$", "^/metrics$"],  # probes and scrapes
                                                         exclude_spans=["receive", "send"]))] if traced else [],
        openapi_config=None,
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
    )
