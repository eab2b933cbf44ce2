import signal

import pytest

from shared.bus import JetStreamEventLog
from shared.embedded import NatsCluster, NatsServer, free_port
from shared.events import JobSubmitted

from ..conftest import eventually
from .helpers import NOW, spec

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(scratch):
    ports = [free_port() for _ in range(3)]
    servers = [NatsServer(scratch / f"cluster-{i}", free_port(),
                          cluster=NatsCluster("test", f"n{i}", ports[i], tuple(p for p in ports if p != ports[i])))
               for i in range(3)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


async def test_an_r3_stream_keeps_every_event_and_takes_new_ones_after_a_server_is_killed(cluster):
    url = ",".join(server.url for server in cluster)
    events = None

    async def connected():  # the cluster elects its JetStream leader first
        nonlocal events
        try:
            events = await JetStreamEventLog.connect(url, "cluster-test", replicas=3, retry_for=2)
            return True
        except Exception:
            return False

    await eventually(connected, what="the cluster to accept an R3 stream")
    try:
        before = [(await events.publish(JobSubmitted(spec=spec(), submitted_at=NOW)))[0] for _ in range(20)]
        assert (await events.js.stream_info("SCNS")).config.num_replicas == 3
        cluster[0].process.send_signal(signal.SIGKILL)  # one of three servers dies

        async def published():
            try:
                return (await events.publish(JobSubmitted(spec=spec(), submitted_at=NOW)))[0]
            except Exception:
                return None

        after = await eventually(published, what="a publish after the loss of a server")
        assert after > before[-1]
        for seq in [*before, after]:
            assert isinstance((await events.read(seq)).event, JobSubmitted)
    finally:
        await events.close()
