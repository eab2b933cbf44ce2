"""Who may do what (pure): bearer tokens map to an account and a role, `user` or `admin`.

A user acts only for its own account: it submits for it, and queries, lists, cancels and
reads the logs and events of its jobs only. An admin may do everything.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ROLES = ("user", "admin")
TOKEN_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # the token's name (shown in logs and audit, never the secret)
    account: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# The bootstrap admin token (SCNS_ADMIN_TOKEN), and everyone when AUTH_DISABLED: their names are
# reserved, so the audit trail (JobSubmitted.submitted_by) can tell them from created tokens.
BOOTSTRAP_ADMIN = Principal("admin", "*", "admin")
ANONYMOUS = Principal("anonymous", "*", "admin")
RESERVED_NAMES = frozenset({BOOTSTRAP_ADMIN.name, ANONYMOUS.name})


class NotAuthenticated(Exception):
    """401: no token, or one that is unknown or revoked."""


class Forbidden(Exception):
    """403: a valid token, but not for this."""


def token_hash(token: str) -> str:
    # Tokens are 256 random bits, so a plain SHA-256 is enough to make the stored form useless.
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str) -> str:
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise NotAuthenticated("Missing bearer token (Authorization: Bearer <token>)")
    return credential.strip()


def check_account(principal: Principal, account: str, action: str) -> None:
    if not principal.is_admin and principal.account != account:
        raise Forbidden(f"token {principal.name!r} (account {principal.account!r}) may not {action} "
                        f"for account {account!r}")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden(f"token {principal.name!r} is not an admin token")


def visible_account(principal: Principal, requested: str | None) -> str | None:
    """The account filter of a listing: a user sees its own account only."""
    if principal.is_admin:
        return requested
    if requested is not None and requested != principal.account:
        raise Forbidden(f"token {principal.name!r} may only list account {principal.account!r}")
    return principal.account
