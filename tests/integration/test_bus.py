import asyncio
import contextlib
from datetime import datetime, timezone

import nats
import pytest

from shared import bus
from shared.bus import JetStreamEventLog, at_tip, decode_message
from shared.events import STREAM, JobCancelRequested, JobFinished, JobLost, JobSubmitted

from ..conftest import eventually
from .helpers import NOW, spec

pytestmark = pytest.mark.integration


async def test_publish_is_durable_ordered_and_deduplicated_by_msg_id(event_log):
    first, dup1 = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW), "submit:acct:key-1")
    second, _ = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW))
    again, dup2 = await event_log.publish(JobSubmitted(spec=spec(), submitted_at=NOW), "submit:acct:key-1")
    assert second > first and again == first and dup2 and not dup1
    assert await event_log.last_seq() == second
    assert (await event_log.read(first)).event.spec == spec()
    assert await event_log.read(second + 100) is None


async def test_last_on_subject_and_replay_in_order(event_log):
    for job_id in (5, 6):
        await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    assert (await event_log.last_on("scns.job.6.cancel_requested")).event.job_id == 6
    assert await event_log.last_on("scns.job.7.cancel_requested") is None
    assert (await event_log.last_on("scns.job.*.cancel_requested")).event.job_id == 6  # wildcards work
    seen = []
    async for msg in event_log.replay(2):
        seen.append(decode_message(msg).event.job_id)
        if msg.metadata.num_pending == 0:
            break
    assert seen == [6]


async def test_foreign_data_in_the_stream_is_skipped_not_fatal(event_log):
    await event_log.js.publish("scns.job.1.bogus", b"\x00not an event")
    async for msg in event_log.replay(1):
        assert decode_message(msg) is None
        break


async def test_a_stored_message_is_read_whole_with_its_time_and_a_bad_request_is_not_taken_for_absence(event_log):
    data = bytes(range(256))  # not UTF-8: must come through the base64 of the API's JSON
    ack = await event_log.js.publish("scns.job.3.bogus", data, headers={"traceparent": "00-ab-cd-01"})
    stored = await event_log.stored(ack.seq)
    assert (stored.subject, stored.seq, stored.data) == ("scns.job.3.bogus", ack.seq, data)
    assert abs((stored.time - datetime.now(timezone.utc)).total_seconds()) < 60
    assert await event_log.stored(last_on="scns.job.*.bogus") == stored
    assert await event_log.read(ack.seq) is None  # not an event of ours: skipped
    empty = await event_log.js.publish("scns.job.4.bogus", b"", headers={"traceparent": "00-ab-cd-01"})
    assert (await event_log.stored(empty.seq)).data == b""  # (the API leaves an empty payload out)
    assert await event_log.read(empty.seq) is None and await event_log.last_on("scns.job.4.bogus") is None
    seq, _ = await event_log.publish(JobCancelRequested(job_id=3, requested_at=NOW))
    delivered = await event_log.read(seq)
    assert delivered.event == JobCancelRequested(job_id=3, requested_at=NOW) and delivered.stored_at.tzinfo
    with pytest.raises(nats.js.errors.BadRequestError):
        await event_log.stored(seq=0)  # a bad request is an error, not "no such message"


async def test_a_job_gets_one_end_only_whoever_writes_it(event_log):
    finished = JobFinished(job_id=9, node="n1", state="COMPLETED", exit_code="0:0", ended_at=NOW)
    lost = JobLost(job_id=9, node="n1", reason="gone", lost_at=NOW)
    first = await event_log.publish_end(finished, "finished:9")
    assert first is not None
    assert await event_log.publish_end(finished, "finished:9") is None  # a retry: the end is there already
    assert await event_log.publish_end(lost, "JobLost:9") is None  # a second, different end: refused
    assert await event_log.publish_end(lost, "JobLost:10") is None
    ends = [d.event for d in await event_log.history("scns.job.9.end.>")]
    assert ends == [finished]


async def test_retention_is_configurable_and_forever_by_default(event_log):
    assert (await event_log.js.stream_info("SCNS")).config.max_age in (None, 0)
    await event_log.ensure_stream(max_age_days=30)
    assert (await event_log.js.stream_info("SCNS")).config.max_age == 30 * 86400
    await event_log.ensure_stream()
    assert (await event_log.js.stream_info("SCNS")).config.max_age in (None, 0)


async def test_a_log_reader_ends_when_its_own_connection_is_closed(nats_server):
    """Not an outage to wait out: a reader retrying on a closed client would keep its service alive."""
    events = await JetStreamEventLog.connect(nats_server.url, "closing")

    async def read_all():
        async for _ in events.replay(1):
            pass

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0.3)
    await events.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await asyncio.wait_for(reader, 10)


async def read_into(events: JetStreamEventLog, seen: list[int]) -> None:
    async for msg in events.replay(1):
        seen.append(decode_message(msg).event.job_id)


async def pull_requests(events: JetStreamEventLog) -> tuple[list, nats.aio.subscription.Subscription]:
    """The pull requests the stream's consumers get from now on (NATS echoes our own publishes)."""
    requests = []

    async def record(msg):
        requests.append(msg)

    return requests, await events.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.>", cb=record)


async def test_a_log_reader_keeps_one_pull_request_open_not_one_per_event(event_log):
    """Events that come one at a time cost a reader no request each: one request stays open."""
    requests, watcher = await pull_requests(event_log)
    seen: list[int] = []
    reader = asyncio.create_task(read_into(event_log, seen))
    try:
        for job_id in range(1, 41):
            await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
            await eventually(lambda job_id=job_id: seen[-1:] == [job_id], what=f"event {job_id} read")
        assert seen == list(range(1, 41))
        assert len(requests) <= 2  # the first, and a renewal should a slow machine see it expire
    finally:
        reader.cancel()
        await watcher.unsubscribe()


async def test_a_log_reader_hands_over_what_arrived_together_in_one_list(event_log):
    """What came while its reader was busy is handed over at once: the projector applies it in
    one transaction, the scheduler decides on it in one pass."""
    for job_id in range(1, 41):
        await event_log.publish(JobCancelRequested(job_id=job_id, requested_at=NOW))
    lists = []
    async with contextlib.aclosing(event_log.arrivals(1)) as arriving:
        async for messages in arriving:
            lists.append([decode_message(msg).event.job_id for msg in messages])
            if at_tip(messages[-1], messages):
                break
    assert [job_id for arrived in lists for job_id in arrived] == list(range(1, 41))
    assert len(lists) < 10  # the stored 40 come in a read or a few, not one by one


async def test_a_log_reader_asks_again_when_its_request_expires(event_log, monkeypatch):
    monkeypatch.setattr(bus, "PULL_EXPIRES_S", 0.3)
    monkeypatch.setattr(bus, "PULL_HEARTBEAT_S", 0.1)
    requests, watcher = await pull_requests(event_log)
    seen: list[int] = []
    reader = asyncio.create_task(read_into(event_log, seen))
    try:
        await eventually(lambda: len(requests) >= 4, what="requests renewed as they expire")
        await event_log.publish(JobCancelRequested(job_id=7, requested_at=NOW))
        await eventually(lambda: seen == [7], what="the event read after its reader's requests expired")
    finally:
        reader.cancel()
        await watcher.unsubscribe()


async def test_a_log_reader_whose_consumer_is_deleted_goes_on_from_where_it_was(event_log):
    seen: list[int] = []
    reader = asyncio.create_task(read_into(event_log, seen))
    try:
        await event_log.publish(JobCancelRequested(job_id=1, requested_at=NOW))
        await eventually(lambda: seen == [1], what="the first event read")
        for consumer in await event_log.js.consumers_info(STREAM):
            await event_log.js.delete_consumer(STREAM, consumer.name)
        await event_log.publish(JobCancelRequested(job_id=2, requested_at=NOW))
        await eventually(lambda: seen == [1, 2], what="the next event read, once, by a new consumer")
    finally:
        reader.cancel()
