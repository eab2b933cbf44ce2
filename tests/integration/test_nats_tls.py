"""TLS to NATS, configured as a service configures it (NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY)."""

from __future__ import annotations

import pytest

from shared.bus import JetStreamEventLog
from shared.config import Settings
from shared.embedded import NatsServer, ServerTls, free_port

from ..certs import self_signed

pytestmark = pytest.mark.integration


async def test_services_reach_nats_over_tls_only_with_its_ca_and_their_certificate(scratch):
    folder = scratch / "nats-tls"
    cert, key = self_signed(folder / "server")
    client_cert, client_key = self_signed(folder / "client")
    # The server wants a client certificate signed by the client CA (here self-signed: its own CA).
    server = NatsServer(folder / "nats", free_port(), tls=ServerTls(cert, key, client_ca=client_cert)).start()
    try:
        assert server.url.startswith("tls://")
        trusted = Settings(nats_url=server.url, nats_tls_ca=str(cert), nats_tls_cert=str(client_cert),
                           nats_tls_key=str(client_key))
        events = await JetStreamEventLog.for_service(trusted, "tls-test", retry_for=5, keeper=True)
        try:
            assert await events.last_seq() == 0  # connected, the stream made, over TLS
            assert events.nc.connected_url.scheme == "tls"
        finally:
            await events.close()
        for refused in (Settings(nats_url=server.url),  # the server's certificate is not trusted
                        Settings(nats_url=server.url, nats_tls_ca=str(cert))):  # no client certificate
            with pytest.raises(ConnectionError):
                await JetStreamEventLog.for_service(refused, "tls-test", retry_for=1)
    finally:
        server.stop()
