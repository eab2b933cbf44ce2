"""scns's option checks and its client's view of a server that is not there."""

import pytest

from scns_cli.client import Api
from scns_cli.commands import states_option
from scns_cli.errors import CliError, Unreachable
from scns_cli.render import ACTIVE_STATES
from shared.embedded import free_port


def test_a_state_the_command_does_not_take_is_an_error_not_ignored():
    assert states_option("PD,R", ACTIVE_STATES) == ["PENDING", "RUNNING"]
    with pytest.raises(CliError, match="COMPLETED"):
        states_option("CD", ACTIVE_STATES)  # cancel -t CD must not mean "every job"
    with pytest.raises(CliError, match="COMPLETED"):
        states_option("R,CD", ["RUNNING"])


def test_a_submit_to_a_port_nothing_listens_on_is_refused_at_once_not_retried():
    api = Api(f"http://127.0.0.1:{free_port()}", "token")
    with pytest.raises(Unreachable) as refused:
        api.submit({"job": {}, "script": "true"})
    assert refused.value.refused and "connection refused" in str(refused.value)
