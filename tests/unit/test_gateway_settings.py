import logging

import httpx
import pytest

from services.gateway.app import create_app, submission_msg_id
from services.gateway.bootstrap import KEEP_ALIVE_S, forwarding_options
from shared.config import ConfigError, Settings, load_settings


def test_authentication_can_be_off_only_on_loopback_and_says_so(caplog):
    with pytest.raises(ValueError, match="only on loopback"):
        create_app(Settings(api_host="0.0.0.0", auth_disabled=True))
    with pytest.raises(ValueError, match="SCNS_ADMIN_TOKEN"):
        create_app(Settings(api_host="127.0.0.1"))
    with caplog.at_level(logging.WARNING):
        create_app(Settings(api_host="127.0.0.1", auth_disabled=True))
    assert "AUTHENTICATION IS OFF" in caplog.text
    with pytest.raises(ValueError, match="at least 32 characters"):
        create_app(Settings(api_host="0.0.0.0", admin_token="guessable"))
    create_app(Settings(api_host="0.0.0.0", admin_token="t" * 32))  # a token: any address


def test_idempotency_keys_of_different_accounts_never_share_a_msg_id():
    assert submission_msg_id("a:b", "c") != submission_msg_id("a", "b:c")
    assert submission_msg_id("acct", "k") == submission_msg_id("acct", "k")


def test_forwarded_headers_are_believed_only_from_the_proxies_named():
    # uvicorn's own default believes 127.0.0.1, where every local process connects from.
    assert forwarding_options(load_settings({}))["proxy_headers"] is False
    behind = forwarding_options(load_settings({"API_TRUSTED_PROXIES": "10.0.0.5, 192.168.1.0/24"}))
    assert behind == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5", "192.168.1.0/24"]}
    for wrong in ("*", "proxy.example", "10.0.0.300"):
        with pytest.raises(ConfigError, match="API_TRUSTED_PROXIES"):
            forwarding_options(load_settings({"API_TRUSTED_PROXIES": wrong}))


def test_an_idle_connection_is_kept_longer_than_clients_and_proxies_keep_it():
    """Else a client's next request on it can meet the server's close and fail."""
    assert KEEP_ALIVE_S > httpx.Limits().keepalive_expiry
    assert KEEP_ALIVE_S > 60  # nginx's keepalive_timeout for its upstreams
