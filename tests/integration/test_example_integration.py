"""The example integration (examples/notify_on_finish.py) follows the event stream with its own
durable consumer, with the read-only credentials of integrations: stopped for a while, and
across a NATS restart, it catches up with no gap and no duplicate."""

from __future__ import annotations

import asyncio

import pytest

from examples.notify_on_finish import follow
from shared.bus import JetStreamEventLog
from shared.embedded import NatsServer, free_port
from shared.nats_auth import ADMIN, INTEGRATION, credentials_path, issue_credentials, server_authorization
from shared.events import JobCancelled, JobFinished, JobRequeued, JobSubmitted

from ..conftest import eventually
from .helpers import NOW, spec

pytestmark = pytest.mark.integration


async def jobs_ending(events: JetStreamEventLog, count: int) -> list[tuple[int, str]]:
    """Jobs of accounts A and B submitted and ended (one requeued first): (end seq, line) for A's."""
    expected = []
    for n in range(count):
        account = "acct-a" if n % 2 == 0 else "acct-b"
        job_id, _ = await events.publish(JobSubmitted(spec=spec(account=account), submitted_at=NOW))
        if n % 3 == 0:
            await events.publish_end(JobRequeued(job_id=job_id, node="n1", reason="lost", requeued_at=NOW), "r")
        end = (JobCancelled(job_id=job_id, cancelled_at=NOW) if n % 4 == 1 else
               JobFinished(job_id=job_id, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW))
        seq, _ = await events.publish(end)
        if account == "acct-a":
            state = "CANCELLED" if isinstance(end, JobCancelled) else "COMPLETED"
            expected.append((seq, f"{seq} job {job_id} {state} 0:0"))
    return expected


async def test_a_stopped_integration_catches_up_without_gap_or_duplicate_even_across_a_nats_restart(scratch):
    folder = scratch / "integration-credentials"
    users = {entry.user: entry for entry in issue_credentials(folder, ["n1"])}
    server = NatsServer(scratch / "integration-nats", free_port(),
                        authorization=server_authorization(list(users.values()), ["n1"])).start()
    output = scratch / "finished-acct-a.txt"
    reader = credentials_path(folder, INTEGRATION)

    async def producer() -> JetStreamEventLog:
        return await JetStreamEventLog.connect(server.url, "producer", credentials=users[ADMIN])

    try:
        events = await producer()
        expected = await jobs_ending(events, 6)
        stop = asyncio.Event()
        running = asyncio.create_task(follow(server.url, "acct-a", output, "notify-acct-a", from_seq=1, stop=stop,
                                              credentials=reader))
        await eventually(lambda: output.exists() and len(output.read_text().splitlines()) == len(expected),
                         what="the first lines")
        stop.set()
        await running  # stopped: what follows happens while it is away
        expected += await jobs_ending(events, 6)
        stop = asyncio.Event()
        running = asyncio.create_task(follow(server.url, "acct-a", output, "notify-acct-a", stop=stop,
                                              credentials=reader))
        await eventually(lambda: len(output.read_text().splitlines()) >= len(expected), what="the catch-up")
        await events.close()
        server.stop()
        server.start()  # NATS restarts under the running integration (same store: the consumer survives)
        events = await producer()
        expected += await jobs_ending(events, 6)
        await eventually(lambda: len(output.read_text().splitlines()) >= len(expected), what="the lines after it")
        stop.set()
        await running
        await events.close()
        assert output.read_text().splitlines() == [line for _, line in expected]  # every one, once, in order
    finally:
        server.stop()
