import logging

import pytest

from services.gateway.app import create_app, submission_msg_id
from shared.config import Settings


def test_authentication_can_be_off_only_on_loopback_and_says_so(caplog):
    with pytest.raises(ValueError, match="only on loopback"):
        create_app(Settings(api_host="0.0.0.0", auth_disabled=True))
    with pytest.raises(ValueError, match="SCNS_ADMIN_TOKEN"):
        create_app(Settings(api_host="127.0.0.1"))
    with caplog.at_level(logging.WARNING):
        create_app(Settings(api_host="127.0.0.1", auth_disabled=True))
    assert "AUTHENTICATION IS OFF" in caplog.text
    create_app(Settings(api_host="0.0.0.0", admin_token="t"))  # a token: any address


def test_idempotency_keys_of_different_accounts_never_share_a_msg_id():
    assert submission_msg_id("a:b", "c") != submission_msg_id("a", "b:c")
    assert submission_msg_id("acct", "k") == submission_msg_id("acct", "k")
