"""A job's output, asked of the executor that holds its files (NATS request/reply)."""

from __future__ import annotations

import time

import msgspec
import nats
from nats.aio.client import Client

from services.gateway.core.recent_logs import RecentLogs
from services.gateway.core.views import JobRecord
from shared.events import LOGS_SUBJECT, TERMINAL_STATES
from shared.rpc import LogReply, LogRequest

LOG_TIMEOUT_S = 2.0


class NatsLogReader:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.recent = RecentLogs(time.monotonic)

    async def read(self, job: JobRecord) -> tuple[str, str, bool]:
        """(stdout, stderr, available); nothing to read before the job has a node. An ended job's
        output is asked of its node once in a while (RecentLogs), not at every query."""
        if not job.node:
            return "", "", True
        ended = job.state in TERMINAL_STATES
        if ended and (kept := self.recent.get(job.job_id)) is not None:
            return *kept, True
        request = msgspec.json.encode(LogRequest(job_id=job.job_id))
        try:
            reply = await self.nc.request(LOGS_SUBJECT.format(node=job.node), request, timeout=LOG_TIMEOUT_S)
            answer = msgspec.json.decode(reply.data, type=LogReply)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, msgspec.DecodeError,
                msgspec.ValidationError):
            return "", "", False
        available = answer.error is None
        if ended and available:
            self.recent.put(job.job_id, answer.stdout, answer.stderr)
        return answer.stdout, answer.stderr, available
