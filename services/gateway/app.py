"""The REST API (API.md): thin handlers over the event log, the read model and the nodes.

The gateway only records requests: a submit is a `JobSubmitted` acked by JetStream before the
reply (its stream sequence is the job id); a cancel is a `JobCancelRequested`. Queries read the
read model, and the log itself for a job the projection has not reached yet.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
import nats
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg_pool import AsyncConnectionPool

from services.gateway.adapters.jobs import PostgresJobView
from services.gateway.adapters.logs import NatsLogReader
from services.gateway.adapters.nodes import NodeDirectory
from services.gateway.core.validation import RequestInvalid, decode_submit, parse_job_id, to_spec
from services.gateway.core.views import JobRecord, pending_reason, query_response
from services.gateway.errors import DependencyDown, JobNotFound
from shared.bus import JetStreamEventLog
from shared.config import Settings
from shared.events import TERMINAL_STATES, JobCancelRequested, JobSubmitted

VERSION = "0.1.0"
NODES_READY_TIMEOUT_S = 10.0


@dataclass
class Gateway:
    """What the handlers use; opened in the lifespan."""

    settings: Settings
    events: JetStreamEventLog
    jobs: PostgresJobView
    logs: NatsLogReader
    nodes: NodeDirectory

    async def job(self, job_id: int) -> JobRecord:
        if (record := await self.jobs.job(job_id)) is not None:
            return record
        # Acknowledged but not projected yet: the log itself knows the job.
        delivered = await self.events.read(job_id)
        if delivered is None or not isinstance(delivered.event, JobSubmitted):
            raise JobNotFound(job_id)
        return JobRecord.submitted(job_id, delivered.event.spec, delivered.event.submitted_at)

    async def reason(self, job: JobRecord) -> str:
        if job.state != "PENDING" or job.node:
            return pending_reason(job, partition_live=True, jobs_ahead=False)
        return pending_reason(job, self.nodes.partition_live(job.partition), await self.jobs.jobs_ahead(job))

    async def publish(self, event, msg_id: str | None) -> int:
        try:
            seq, _ = await self.events.publish(event, msg_id)
            return seq
        except nats.errors.Error as error:
            raise DependencyDown(f"NATS (event log) is unavailable: {error}") from error


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=msgspec.json.encode(content), status_code=status_code, media_type="application/json",
                    headers=headers)


@post("/jobs/submit", status_code=201)
async def submit(request: Request) -> Response:
    gateway = gateway_of(request)
    body = decode_submit(await request.body())
    try:
        await asyncio.wait_for(gateway.nodes.ready.wait(), NODES_READY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise DependencyDown("NATS (event log): the node directory has not been read yet") from None
    spec = to_spec(body, gateway.nodes.partitions(), gateway.settings.roots())
    key = request.headers.get("idempotency-key")
    job_id = await gateway.publish(JobSubmitted(spec=spec, submitted_at=utcnow()),
                                   f"submit:{spec.account}:{key}" if key else None)
    return json_response({"job_id": str(job_id)}, 201)


@get("/jobs/query/{job_id:str}")
async def query(request: Request, job_id: str) -> Response:
    gateway = gateway_of(request)
    job = await gateway.job(parse_job_id(job_id))
    stdout, stderr, available = await gateway.logs.read(job)
    headers = {} if available else {"X-Log-Unavailable": job.node}
    return json_response(query_response(job, stdout, stderr, await gateway.reason(job), utcnow()), headers=headers)


@post("/jobs/cancel/{job_id:str}", status_code=200)
async def cancel(request: Request, job_id: str) -> Response:
    gateway = gateway_of(request)
    job = await gateway.job(parse_job_id(job_id))
    if job.state not in TERMINAL_STATES:
        await gateway.publish(JobCancelRequested(job_id=job.job_id, requested_at=utcnow()), f"cancel:{job.job_id}")
    return json_response({"msg": "取消成功"})


@get("/health")
async def health(request: Request) -> Response:
    gateway = gateway_of(request)
    checks: dict[str, str] = {"nats": "ok" if gateway.events.nc.is_connected else "disconnected"}
    try:
        await gateway.jobs.ping()
        checks["postgresql"] = "ok"
    except DependencyDown as error:
        checks["postgresql"] = str(error)
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "healthy" if healthy else "unhealthy", "service": "scns-conductor-api", "checks": checks}
    return json_response(body, 200 if healthy else 503)


@get("/")
async def root() -> Response:
    return json_response({"service": "SCNS-Conductor API", "version": VERSION, "status": "running"})


def on_invalid(_: Request, exc: RequestInvalid) -> Response:
    return json_response({"detail": exc.errors}, 422)


def on_not_found(_: Request, exc: JobNotFound) -> Response:
    return json_response({"detail": str(exc)}, 404)


def on_dependency_down(_: Request, exc: DependencyDown) -> Response:
    return json_response({"detail": str(exc)}, 503)


def on_http_error(_: Request, exc: HTTPException) -> Response:
    return json_response({"detail": exc.detail}, exc.status_code, headers=exc.headers)


def request_headers_middleware(app: ASGIApp) -> ASGIApp:
    """X-Request-ID (the client's, else a new UUID4) and X-Process-Time on every response."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming or str(uuid.uuid4())

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


def auth_guard(settings: Settings):
    token = settings.admin_token

    async def before_request(request: Request) -> None:
        if not token or request.url.path in ("/", "/health"):
            return
        given = request.headers.get("authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
            raise NotAuthorizedException("Missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    return before_request


def create_app(settings: Settings) -> Litestar:
    if not settings.admin_token and not is_loopback(settings.api_host):
        raise ValueError(f"authentication is off (no SCNS_ADMIN_TOKEN): refusing to listen on {settings.api_host}")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        events = await JetStreamEventLog.connect(settings.nats_url, "scns-gateway", replicas=settings.stream_replicas)
        # Checked on checkout: after a PostgreSQL restart a stale connection is replaced, not used.
        pool = AsyncConnectionPool(settings.database_url, min_size=2, max_size=16, open=False,
                                   check=AsyncConnectionPool.check_connection)
        await pool.open(wait=False)
        nodes = NodeDirectory()
        follower = asyncio.create_task(nodes.follow(events))
        app.state.gateway = Gateway(settings, events, PostgresJobView(pool), NatsLogReader(events.nc), nodes)
        try:
            yield
        finally:
            follower.cancel()
            await pool.close()
            await events.close()

    return Litestar(
        route_handlers=[submit, query, cancel, health, root],
        lifespan=[lifespan],
        before_request=auth_guard(settings),
        middleware=[request_headers_middleware],
        exception_handlers={
            RequestInvalid: on_invalid,
            JobNotFound: on_not_found,
            DependencyDown: on_dependency_down,
            HTTPException: on_http_error,
        },
        state=State(),
        openapi_config=None,
        logging_config=None,
    )
