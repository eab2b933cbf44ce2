"""The NATS permissions as data (shared/nats_auth.py): who may publish what."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.bus import is_request
from shared.nats_auth import GATEWAY, INTEGRATION, PROJECTOR, SCHEDULER, executor_user, permissions, users_for

NODES = ["node-a", "node-b"]


def allowed(user: str) -> list[str]:
    return permissions(user, NODES)["publish"]["allow"]


def test_only_the_admin_is_unrestricted_and_no_one_may_answer_any_reply_subject():
    assert permissions("admin", NODES) is None
    for user in users_for(NODES)[1:]:
        assert "allow_responses" not in permissions(user, NODES)
        assert ">" not in allowed(user) and "scns.>" not in allowed(user)


def test_each_event_subject_has_the_one_publisher_it_should():
    on_log = {user: [subject for subject in allowed(user) if subject.startswith("scns.")] for user in users_for(NODES)[1:]}
    assert on_log[INTEGRATION] == [] and on_log[PROJECTOR] == []
    assert set(on_log[GATEWAY]) == {"scns.submit", "scns.job.*.cancel_requested", "scns.node.*.drained",
                                    "scns.node.*.resumed"}
    assert "scns.job.*.allocated.*" in on_log[SCHEDULER]
    assert all("node-a" in subject.split(".") for subject in on_log[executor_user("node-a")])
    assert not any("allocated" in subject for user, subjects in on_log.items() if user != SCHEDULER
                   for subject in subjects)


@pytest.mark.parametrize("node", ["a.b", "*", ">", "", "x" * 65])
def test_a_node_name_that_is_not_one_subject_token_gets_no_user(node):
    with pytest.raises(ValueError):
        executor_user(node)


@pytest.mark.parametrize("reply, answered", [("_INBOX.abc", True), ("_INBOX_gateway.abc", True),
                                             ("$JS.ACK.SCNS.c.1.2.3.4.5", False), ("scns.job.1.end.cancelled", False),
                                             ("", False), (None, False)])
def test_only_a_request_from_an_inbox_is_answered(reply, answered):
    assert is_request(SimpleNamespace(reply=reply)) is answered
