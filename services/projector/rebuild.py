"""Rebuild the read model from the event log, through the running projector:

    python -m services.projector.rebuild        (./just rebuild)

Prints the projector's report: events replayed, rate, and whether the rebuilt model equalled
the live one. NATS is found through NATS_URL.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec
import nats

from shared.config import ConfigError, load_settings
from shared.rpc import REBUILD_SUBJECT, RebuildReport

TIMEOUT_S = 3600.0


async def request_rebuild(nats_url: str) -> RebuildReport:
    nc = await nats.connect(nats_url.split(","), name="scns-rebuild", connect_timeout=5)
    try:
        reply = await nc.request(REBUILD_SUBJECT, b"", timeout=TIMEOUT_S)
        return msgspec.json.decode(reply.data, type=RebuildReport)
    finally:
        await nc.close()


def main() -> int:
    try:
        report = asyncio.run(request_rebuild(load_settings().nats_url))
    except (ConfigError, OSError, nats.errors.Error) as error:
        print(f"rebuild: {error or type(error).__name__} (is the projector running?)", file=sys.stderr)
        return 1
    print(msgspec.json.encode(report).decode())
    return 1 if report.error or report.equal_to_live is False else 0


if __name__ == "__main__":
    sys.exit(main())
