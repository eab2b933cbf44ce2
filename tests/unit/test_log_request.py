"""The gateway asks an executor for a job's output by the job's id alone: an executor from
before that rule read whatever paths a request named, so a request never names one."""

from datetime import datetime, timezone

import msgspec

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
