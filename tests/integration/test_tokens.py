from datetime import datetime, timezone

import msgspec
import pytest

from services.gateway.adapters.tokens import NatsTokenStore, TokenNameTaken, TokenRecord
from services.gateway.core.auth import NotAuthenticated, Principal, token_hash

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(event_log):
    try:
        await event_log.js.delete_key_value("SCNS_TOKENS")
    except Exception:
        pass
    return await NatsTokenStore.open(event_log.js, admin_token="bootstrap-secret")


async def test_tokens_are_kept_only_as_hashes(store):
    _, token = await store.create("alice", "acct-a", "user")
    # Hex: one in 64 of the URL-safe base64 ones started with "-", which `scns config set token` refused.
    assert len(token) == 64 and int(token, 16) >= 0
    keys = await store.kv.keys()
    stored = [key.encode() + (await store.kv.get(key)).value for key in keys]
    assert stored and all(token.encode() not in entry for entry in stored)
    assert await store.authenticate(token) == Principal("alice", "acct-a", "user")


async def test_bootstrap_admin_unknown_and_revoked_tokens(store):
    assert (await store.authenticate("bootstrap-secret")).is_admin
    with pytest.raises(NotAuthenticated):
        await store.authenticate("never-issued")
    _, token = await store.create("bob", "acct-b", "user")
    assert await store.revoke("bob") and not await store.revoke("bob")
    with pytest.raises(NotAuthenticated):
        await store.authenticate(token)  # at once: no cache is consulted while NATS answers


async def test_names_are_unique_and_listed_without_secrets(store):
    await store.create("carol", "acct-c", "admin")
    with pytest.raises(TokenNameTaken):
        await store.create("carol", "acct-c", "user")
    assert [(r.name, r.account, r.role) for r in await store.list()] == [("carol", "acct-c", "admin")]


@pytest.mark.parametrize("name", ["admin", "anonymous"])
async def test_the_names_the_audit_trail_gives_the_bootstrap_admin_and_auth_disabled_are_reserved(store, name):
    with pytest.raises(TokenNameTaken, match="reserved"):
        await store.create(name, "acct-x", "user")
    assert await store.list() == []


async def test_a_record_written_to_nats_by_someone_else_is_not_a_token(store, event_log):
    """A job can reach NATS (until issue 6): a record it writes, unsigned, must not authenticate."""
    forged_secret = "forged-secret"
    forged = TokenRecord(name="forged", account="*", role="admin", hash=token_hash(forged_secret),
                         created_at=datetime.now(timezone.utc))
    await store.kv.put(f"h.{forged.hash}", msgspec.json.encode(forged))
    with pytest.raises(NotAuthenticated):
        await store.authenticate(forged_secret)
    assert "forged" not in [r.name for r in await store.list()]
