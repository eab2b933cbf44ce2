"""The services refuse a nats-server that would silently ignore their compare-and-set headers."""

import pytest
from nats.aio.client import ServerVersion

from shared.bus import require_server_version


@pytest.mark.parametrize("version", ["2.11.0", "2.15.1", "3.0.0"])
def test_servers_from_2_11_are_taken(version):
    require_server_version(ServerVersion(version))


@pytest.mark.parametrize("version", ["2.10.26", "2.9.25", "0.0.0-unknown", "garbage"])
def test_older_or_unknown_servers_are_refused_with_the_reason(version):
    with pytest.raises(ConnectionError, match="too old.*2.11"):
        require_server_version(ServerVersion(version))
