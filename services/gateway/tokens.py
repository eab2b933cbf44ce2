"""Manage API tokens from the command line (the same store as the gateway's /admin/tokens):

    python -m services.gateway.tokens create NAME --account ACCOUNT [--role user|admin]
    python -m services.gateway.tokens revoke NAME
    python -m services.gateway.tokens list

NATS is found through NATS_URL and the signing key is the bootstrap admin token
(SCNS_ADMIN_TOKEN), as the gateway has them. `./just token ...` runs this against `up`'s stack.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.gateway.adapters.tokens import NatsTokenStore, TokenNameTaken
from services.gateway.core.auth import ROLES, TOKEN_NAME
from shared.bus import JetStreamEventLog
from shared.config import ConfigError, load_settings


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    events = await JetStreamEventLog.for_service(settings, "scns-tokens", retry_for=5)
    try:
        if not settings.admin_token:
            print("tokens: set SCNS_ADMIN_TOKEN (tokens are signed with it)", file=sys.stderr)
            return 2
        store = await NatsTokenStore.open(events.js, settings.admin_token, settings.stream_replicas)
        if args.command == "create":
            if not TOKEN_NAME.match(args.name):
                print("tokens: a name is 1-64 letters, digits, '_' or '-'", file=sys.stderr)
                return 2
            record, token = await store.create(args.name, args.account, args.role)
            print(f"created token {record.name!r} (account {record.account!r}, role {record.role}); "
                  f"it is shown this once:\n{token}")
        elif args.command == "revoke":
            if not await store.revoke(args.name):
                print(f"tokens: no token named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked token {args.name!r}")
        else:
            for record in await store.list():
                print(f"{record.name}\t{record.account}\t{record.role}\t{record.created_at.isoformat()}")
        return 0
    finally:
        await events.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokens", description="Create, revoke and list API tokens.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a token; prints it once")
    create.add_argument("name")
    create.add_argument("--account", required=True)
    create.add_argument("--role", choices=ROLES, default="user")
    commands.add_parser("revoke", help="revoke a token by name").add_argument("name")
    commands.add_parser("list", help="list tokens (names, accounts, roles; never secrets)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (ConfigError, ConnectionError, TokenNameTaken) as error:
        print(f"tokens: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
