"""API tokens in a NATS key-value bucket, stored by hash; looked up on every request, so a
revoked token stops working at once, on every gateway.

Keys: `h.<sha256>` holds the token's record, `n.<name>` the hash (names are unique). The
bootstrap admin token comes from the settings (`SCNS_ADMIN_TOKEN`), not from the bucket, and
keys an HMAC that signs every record: whoever can write to NATS (until issue 6 locks NATS
down, a job can) still cannot forge a token the gateway accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from datetime import datetime, timezone

import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.gateway.core.auth import (
    BOOTSTRAP_ADMIN,
    RESERVED_NAMES,
    TOKEN_NAME,
    NotAuthenticated,
    Principal,
    token_hash,
)
from services.gateway.errors import DependencyDown
from shared.events import TOKENS_BUCKET

log = logging.getLogger(__name__)

RECENT_LIMIT = 10_000
NATS_TROUBLE = (nats.errors.TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError, TimeoutError)


class TokenRecord(msgspec.Struct, kw_only=True):
    name: str
    account: str
    role: str
    hash: str
    created_at: datetime
    mac: str = ""  # HMAC-SHA256 of the fields above, keyed by the bootstrap admin token

    def principal(self) -> Principal:
        return Principal(self.name, self.account, self.role)

    def signed_part(self) -> bytes:
        return "\n".join((self.name, self.account, self.role, self.hash, self.created_at.isoformat())).encode()


class TokenNameTaken(Exception):
    pass


class NatsTokenStore:
    def __init__(self, kv: KeyValue, js: JetStreamContext, admin_token: str) -> None:
        self.kv = kv
        self.js = js
        self.admin = BOOTSTRAP_ADMIN if admin_token else None
        self._admin_token = admin_token.encode()
        self._signing_key = hmac.new(self._admin_token, b"scns token records v1", hashlib.sha256).digest()
        # Tokens verified lately: used only while NATS cannot be asked (nothing can be revoked then).
        self._recent: OrderedDict[str, Principal] = OrderedDict()

    @classmethod
    async def open(cls, js: JetStreamContext, admin_token: str, replicas: int = 1) -> NatsTokenStore:
        try:
            kv = await js.key_value(TOKENS_BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(bucket=TOKENS_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas)
            )
        return cls(kv, js, admin_token)

    async def authenticate(self, token: str) -> Principal:
        if self.admin is not None and hmac.compare_digest(token.encode(), self._admin_token):
            return self.admin
        digest = token_hash(token)
        try:
            entry = await self.kv.get(f"h.{digest}")
        except KeyNotFoundError:
            self._recent.pop(digest, None)
            raise NotAuthenticated("Invalid or revoked token") from None
        except NATS_TROUBLE as error:
            if digest in self._recent:
                return self._recent[digest]
            raise DependencyDown(f"NATS (token store) is unavailable: {error}") from error
        record = msgspec.json.decode(entry.value, type=TokenRecord)
        if not self._signed(record):
            log.warning("token record %r is not signed by this deployment's key: refused", record.name)
            raise NotAuthenticated("Invalid or revoked token")
        principal = record.principal()
        self._recent[digest] = principal
        self._recent.move_to_end(digest)
        while len(self._recent) > RECENT_LIMIT:
            self._recent.popitem(last=False)
        return principal

    async def create(self, name: str, account: str, role: str) -> tuple[TokenRecord, str]:
        """A new token; the secret is returned once and only its hash is kept."""
        if self.admin is None:
            raise DependencyDown("tokens are signed with the admin token: set SCNS_ADMIN_TOKEN")
        if name in RESERVED_NAMES:
            raise TokenNameTaken(f"the token name {name!r} is reserved (the bootstrap admin's, or AUTH_DISABLED's)")
        token = secrets.token_hex(32)  # never starts with "-", which a command line takes for an option
        record = TokenRecord(name=name, account=account, role=role, hash=token_hash(token),
                             created_at=datetime.now(timezone.utc))
        record.mac = self._mac(record)
        try:
            await self.kv.create(f"n.{name}", record.hash.encode())
        except KeyWrongLastSequenceError:
            raise TokenNameTaken(f"a token named {name!r} exists; revoke it first") from None
        await self.kv.put(f"h.{record.hash}", msgspec.json.encode(record))
        return record, token

    def _mac(self, record: TokenRecord) -> str:
        return hmac.new(self._signing_key, record.signed_part(), hashlib.sha256).hexdigest()

    def _signed(self, record: TokenRecord) -> bool:
        return hmac.compare_digest(record.mac, self._mac(record))

    async def revoke(self, name: str) -> bool:
        if not TOKEN_NAME.match(name):
            return False  # no such name can have been created
        try:
            digest = (await self.kv.get(f"n.{name}")).value.decode()
        except KeyNotFoundError:
            return False
        await self.kv.delete(f"h.{digest}")
        await self.kv.delete(f"n.{name}")
        self._recent.pop(digest, None)
        return True

    async def list(self) -> list[TokenRecord]:
        # The subjects of the bucket's stream, a plain answer, not nats-py's keys() (a watcher that
        # stops at the first message with nothing pending): a token just created was once missing
        # from its list in a full test run.
        prefix = f"$KV.{TOKENS_BUCKET}."
        info = await self.js.stream_info(f"KV_{TOKENS_BUCKET}", subjects_filter=f"{prefix}h.>")
        records = []
        for subject in (info.state.subjects or {}):
            try:
                record = msgspec.json.decode((await self.kv.get(subject.removeprefix(prefix))).value, type=TokenRecord)
            except KeyNotFoundError:
                continue  # revoked meanwhile
            if self._signed(record):
                records.append(record)
        return sorted(records, key=lambda record: record.name)
