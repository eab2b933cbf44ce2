"""Rebuild the read model from the event log, through the running projector:

    python -m services.projector.rebuild        (./just rebuild)

Prints the projector's report: events replayed, rate, and whether the rebuilt model equalled
the live one. NATS is found through NATS_URL (and NATS_CREDENTIALS: the admin's, or the gateway's).
"""

from __future__ import annotations

import asyncio
import sys

import msgspec
import nats

from shared.bus import JetStreamEventLog
from shared.config import ConfigError, Settings, load_settings
from shared.rpc import REBUILD_SUBJECT, RebuildReport

TIMEOUT_S = 3600.0


async def request_rebuild(settings: Settings) -> RebuildReport:
    events = await JetStreamEventLog.for_service(settings, "scns-rebuild", retry_for=5)
    try:
        reply = await events.nc.request(REBUILD_SUBJECT, b"", timeout=TIMEOUT_S)
        return msgspec.json.decode(reply.data, type=RebuildReport)
    finally:
        await events.close()


def main() -> int:
    try:
        report = asyncio.run(request_rebuild(load_settings()))
    except (ConfigError, OSError, nats.errors.Error) as error:
        print(f"rebuild: {error or type(error).__name__} (is the projector running?)", file=sys.stderr)
        return 1
    print(msgspec.json.encode(report).decode())
    return 1 if report.error or report.equal_to_live is False else 0


if __name__ == "__main__":
    sys.exit(main())
