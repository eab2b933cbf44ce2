"""The gateway asks an executor for a job's output by the job's id alone (an executor from
before that rule read whatever paths a request named, so a request never names one), and for an
ended job's output once in a while, not at every query."""

from datetime import datetime, timezone

import msgspec
import nats
import pytest

from services.gateway.adapters.logs import NatsLogReader
from services.gateway.core.views import JobRecord
from shared.events import JobSpec
from shared.rpc import LogReply


class RecordingClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def request(self, subject: str, payload: bytes, timeout: float):
        self.sent.append((subject, payload))
        return type("Reply", (), {"data": msgspec.json.encode(LogReply(stdout="out"))})()


async def test_a_log_request_names_the_job_and_no_path():
    spec = JobSpec(account="a", name="j", partition="p", cwd="/w", stdout="/etc/shadow", stderr="e", script="true",
                   time_limit_s=60)
    job = msgspec.structs.replace(JobRecord.submitted(7, spec, datetime.now(timezone.utc), None), node="n1")
    client = RecordingClient()
    assert await NatsLogReader(client).read(job) == ("out", "", True)
    ((_, payload),) = client.sent
    assert msgspec.json.decode(payload) == {"job_id": 7}


class FailingClient(RecordingClient):
    async def request(self, subject: str, payload: bytes, timeout: float):
        self.sent.append((subject, payload))
        raise nats.errors.TimeoutError


def job_on_node(state: str) -> JobRecord:
    spec = JobSpec(account="a", name="j", partition="p", cwd="/w", stdout="o", stderr="e", script="true",
                   time_limit_s=60)
    return msgspec.structs.replace(JobRecord.submitted(8, spec, datetime.now(timezone.utc), None), node="n1",
                                   state=state)


@pytest.mark.parametrize(("state", "asked"), [("COMPLETED", 1), ("RUNNING", 3)])
async def test_an_ended_jobs_output_is_asked_of_its_node_once_a_running_jobs_at_every_read(state, asked):
    client = RecordingClient()
    reader = NatsLogReader(client)
    for _ in range(3):
        assert await reader.read(job_on_node(state)) == ("out", "", True)
    assert len(client.sent) == asked


async def test_an_unreachable_node_is_asked_again_at_the_next_read():
    client = FailingClient()
    reader = NatsLogReader(client)
    for _ in range(2):
        assert await reader.read(job_on_node("COMPLETED")) == ("", "", False)
    assert len(client.sent) == 2
