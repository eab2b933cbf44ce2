"""NATS permissions, against a real nats-server configured as the embedded stack configures it
(shared.nats_auth): no one without credentials gets in, and no part can forge another's facts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nats
import pytest

from services.gateway.adapters.tokens import NatsTokenStore
from services.scheduler.core.state import SchedulerState
from services.scheduler.snapshots import SnapshotStore
from shared.bus import JetStreamEventLog, stream_config
from shared.embedded import NatsServer, free_port
from shared.events import (
    JobAllocated,
    JobFinished,
    JobStarted,
    JobSubmitted,
    encode,
    executor_consumer,
    subject_of,
)
from shared.rpc import REBUILD_SUBJECT
from shared.nats_auth import (
    ADMIN,
    GATEWAY,
    INTEGRATION,
    PROJECTOR,
    SCHEDULER,
    Credentials,
    executor_user,
    issue_credentials,
    server_authorization,
)

from ..conftest import eventually
from .helpers import NOW, node, spec

pytestmark = pytest.mark.integration

NODES = ["node-a", "node-b"]
ALLOCATION = JobAllocated(job_id=1, node="node-a", cpus=1, memory_mb=1, allocated_at=NOW)
FINISHED = JobFinished(job_id=1, node="node-a", state="COMPLETED", exit_code="0:0", ended_at=NOW)
SUBMITTED = JobSubmitted(spec=spec(), submitted_at=NOW)


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> tuple[NatsServer, dict[str, Credentials]]:
    folder = Path(tmp_path_factory.mktemp("secured-nats"))
    users = {entry.user: entry for entry in issue_credentials(folder / "credentials", NODES)}
    server = NatsServer(folder / "nats", free_port(),
                        authorization=server_authorization(list(users.values()), NODES)).start()
    yield server, users
    server.stop()


@pytest.fixture
async def connect(secured):
    server, users = secured
    opened: list[JetStreamEventLog] = []

    async def as_user(user: str) -> JetStreamEventLog:
        opened.append(await JetStreamEventLog.connect(server.url, f"test-{user}", credentials=users[user],
                                                      keeper=user in (ADMIN, SCHEDULER), retry_for=5))
        return opened[-1]

    yield as_user
    for events in opened:
        await events.close()


async def refused(events: JetStreamEventLog, admin: JetStreamEventLog, event, caplog) -> bool:
    """Whether publishing `event` was refused by the server (and nothing was stored)."""
    before = await admin.last_seq()
    try:
        await events.publish(event, timeout=1)
    except nats.errors.TimeoutError:
        # the server said why to the error callback (logged), and stored nothing
        await eventually(lambda: f'permissions violation for publish to "{subject_of(event)}"' in caplog.text.lower(),
                         timeout=10, what="the permission violation")
        return await admin.last_seq() == before
    return False


async def test_a_client_without_credentials_or_with_wrong_ones_is_turned_away(secured):
    server, users = secured
    with pytest.raises(ConnectionError, match="refused the credentials"):
        await JetStreamEventLog.connect(server.url, "anonymous", retry_for=1)
    with pytest.raises(ConnectionError, match="refused the credentials"):
        await JetStreamEventLog.connect(server.url, "guessing", credentials=Credentials(GATEWAY, "guess"), retry_for=1)


async def test_an_integration_reads_the_log_but_cannot_forge_an_allocation_or_an_end(connect, caplog):
    caplog.set_level(logging.WARNING)
    admin = await connect(ADMIN)
    submitted, _ = await admin.publish(SUBMITTED)
    integration = await connect(INTEGRATION)
    assert (await integration.read(submitted)).event == SUBMITTED  # it can read
    assert [d.seq for d in await integration.history("scns.submit", submitted)] == [submitted]
    assert await refused(integration, admin, ALLOCATION, caplog)
    assert await refused(integration, admin, FINISHED, caplog)
    assert await refused(integration, admin, SUBMITTED, caplog)


async def test_the_gateway_submits_but_cannot_allocate_or_end_a_job(connect, caplog):
    caplog.set_level(logging.WARNING)
    admin, gateway = await connect(ADMIN), await connect(GATEWAY)
    seq, _ = await gateway.publish(SUBMITTED, timeout=5)  # what it is for
    assert (await admin.read(seq)).event == SUBMITTED
    assert await refused(gateway, admin, ALLOCATION, caplog)
    assert await refused(gateway, admin, FINISHED, caplog)


async def test_an_executor_speaks_only_for_its_own_node_and_reads_only_its_own_allocations(connect, caplog):
    caplog.set_level(logging.WARNING)
    admin, executor = await connect(ADMIN), await connect(executor_user("node-a"))
    started = JobStarted(job_id=1, node="node-a", pid=1, started_at=NOW)
    assert (await admin.read((await executor.publish(started, timeout=5))[0])).event == started
    for other_node in (JobStarted(job_id=1, node="node-b", pid=1, started_at=NOW),
                       JobFinished(job_id=1, node="node-b", state="COMPLETED", exit_code="0:0", ended_at=NOW),
                       node("node-b"), ALLOCATION):
        assert await refused(executor, admin, other_node, caplog)
    # node-b's allocations wait in its durable consumer: node-a can neither take nor ack them
    await admin.js.add_consumer("SCNS", durable_name=executor_consumer("node-b"), filter_subject="scns.job.*.allocated.>")
    await admin.publish(JobAllocated(job_id=1, node="node-b", cpus=1, memory_mb=1, allocated_at=NOW))
    subscription = await executor.js.pull_subscribe_bind(durable=executor_consumer("node-b"), stream="SCNS")
    with pytest.raises(nats.errors.TimeoutError):
        await subscription.fetch(1, timeout=1)
    info = await admin.js.consumer_info("SCNS", executor_consumer("node-b"))
    assert info.num_pending == 1 and info.num_ack_pending == 0  # still there for node-b


async def test_no_one_subscribes_to_the_replies_meant_for_another(connect, caplog):
    caplog.set_level(logging.WARNING)
    integration = await connect(INTEGRATION)
    await integration.nc.subscribe("_INBOX_gateway.>")
    await eventually(lambda: 'permissions violation for subscription to "_inbox_gateway.>"' in caplog.text.lower(),
                     timeout=10, what="the refused subscription")


async def test_an_event_on_another_subject_than_its_own_is_not_believed(event_log):
    # Permissions are by subject; what the content says must then agree with the subject.
    forged = JobFinished(job_id=1, node="node-b", state="COMPLETED", exit_code="0:0", ended_at=NOW)
    ack = await event_log.js.publish(subject_of(FINISHED), encode(forged))
    assert await event_log.read(ack.seq) is None
    genuine, _ = await event_log.publish(FINISHED)
    assert (await event_log.read(genuine)).event == FINISHED


def test_credentials_are_kept_owner_only_and_kept_across_starts(tmp_path):
    folder = tmp_path / "credentials"
    first = issue_credentials(folder, NODES)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {path.stat().st_mode & 0o777 for path in folder.iterdir()} == {0o600}
    assert issue_credentials(folder, NODES) == first  # a restart keeps them (the server's config too)
    assert len({entry.password for entry in first}) == len(first)


async def test_an_answer_cannot_be_aimed_into_the_log_through_a_reply_subject(connect, caplog):
    caplog.set_level(logging.WARNING)
    admin, gateway, projector = await connect(ADMIN), await connect(GATEWAY), await connect(PROJECTOR)
    async def naive(msg) -> None:  # a responder that answers whatever reply subject a request names
        await msg.respond(b"{}")

    await projector.nc.subscribe(REBUILD_SUBJECT, cb=naive)
    await projector.nc.flush()
    async def answered() -> bool:  # a true request (its first try once met "no responders" in a full run)
        try:
            return (await gateway.nc.request(REBUILD_SUBJECT, b"", timeout=5)).data == b"{}"
        except nats.errors.NoRespondersError:
            return False

    await eventually(answered, what="the responder to answer a true request")
    aimed = "scns.job.7.end.cancelled"
    await gateway.nc.publish(REBUILD_SUBJECT, b"", reply=aimed)
    await eventually(lambda: f'permissions violation for publish to "{aimed}"' in caplog.text.lower(),
                     timeout=10, what="the refused answer")
    # (not the log's last sequence: another test's leftover service may still publish meanwhile)
    assert await admin.last_on(aimed) is None


async def test_a_msg_id_taken_on_another_subject_does_not_swallow_a_decision(connect):
    admin, gateway, scheduler = await connect(ADMIN), await connect(GATEWAY), await connect(SCHEDULER)
    allocation = JobAllocated(job_id=424242, node="node-a", cpus=1, memory_mb=1, allocated_at=NOW)
    squatter, _ = await gateway.publish(SUBMITTED, "JobAllocated:424242")  # the scheduler's predictable id
    seq, duplicate = await scheduler.publish(allocation, "JobAllocated:424242")
    assert not duplicate and seq != squatter and (await admin.read(seq)).event == allocation
    again = await scheduler.publish_until_acked(allocation, "JobAllocated:424242")
    assert again == seq  # its own retry is still recognised as such


async def test_no_one_redefines_an_executors_consumer_through_the_body_of_a_create(connect, caplog):
    caplog.set_level(logging.WARNING)
    admin, integration = await connect(ADMIN), await connect(INTEGRATION)
    durable = executor_consumer("node-a")
    await admin.js.add_consumer("SCNS", durable_name=durable, filter_subject="scns.job.*.allocated.node-a")
    body = b'{"stream_name": "SCNS", "config": {"name": "%s", "durable_name": "%s", "filter_subject": ">"}}' % (
        durable.encode(), durable.encode())
    for subject in ("$JS.API.CONSUMER.CREATE.SCNS", "$JS.API.CONSUMER.CREATE.SCNS.mine",
                    f"$JS.API.CONSUMER.DURABLE.CREATE.SCNS.{durable}"):
        try:
            await integration.nc.request(subject, body, timeout=2)
        except nats.errors.TimeoutError:
            pass  # refused by the permissions (logged), or answered with an error: either way ...
    info = await admin.js.consumer_info("SCNS", durable)
    assert info.config.filter_subject == "scns.job.*.allocated.node-a"  # ... it is unchanged


async def test_the_services_stores_work_within_their_grants(connect, caplog):
    caplog.set_level(logging.WARNING)
    scheduler, gateway = await connect(SCHEDULER), await connect(GATEWAY)
    snapshots = SnapshotStore(scheduler)
    state = SchedulerState(last_seq=await scheduler.last_seq())
    assert await snapshots.save(state)
    assert await SnapshotStore(scheduler).load() == state  # read back: not only written
    tokens = await NatsTokenStore.open(gateway.js, admin_token="bootstrap-secret")
    _, token = await tokens.create("alice", "acct-a", "user")
    assert (await tokens.authenticate(token)).account == "acct-a"
    assert [record.name for record in await tokens.list()] == ["alice"]
    assert await tokens.revoke("alice")
    assert isinstance(await gateway.js.consumers_info("SCNS"), list)  # the health check's question
    assert "permissions violation" not in caplog.text.lower()


def encode_config(config) -> bytes:
    return json.dumps(config.as_dict()).encode()


async def test_only_the_keeper_makes_the_log_and_no_one_uses_a_log_made_wrong(secured, connect):
    server, users = secured
    admin, integration = await connect(ADMIN), await connect(INTEGRATION)
    await admin.js.delete_stream("SCNS")
    try:
        with pytest.raises(ConnectionError, match="the scheduler makes it"):  # a gateway waits for it
            await JetStreamEventLog.connect(server.url, "gateway", credentials=users[GATEWAY], keeper=False,
                                            retry_for=1)
        with pytest.raises(nats.errors.TimeoutError):  # refused
            await integration.nc.request("$JS.API.STREAM.CREATE.SCNS", encode_config(stream_config(1, 0)), timeout=1)
        with pytest.raises(nats.js.errors.NotFoundError):
            await admin.js.stream_info("SCNS")
        wrong = stream_config(1, 0)
        wrong.max_msgs_per_subject = 1  # one event per subject: a job's history would be erased
        await admin.js.add_stream(wrong)
        with pytest.raises(ConnectionError, match="max_msgs_per_subject 1"):
            await JetStreamEventLog.connect(server.url, "scheduler", credentials=users[SCHEDULER], retry_for=5)
    finally:
        try:
            await admin.js.delete_stream("SCNS")
        except nats.js.errors.NotFoundError:
            pass
        await admin.ensure_stream()
