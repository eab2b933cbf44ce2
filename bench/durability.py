#!/usr/bin/env python3
"""Event-log durability modes and what they cost: JetStream publish throughput (each publish
waiting for its ack, as the gateway's submit does; and pipelined, as a bulk import would) for
  1. one server, default sync (fsync every 2 minutes; acked events survive a crash of the server
     process, not always a power loss),
  2. one server, sync always (fsync before every ack),
  3. a 3-server cluster on loopback with the stream replicated three times (R3).
Prints a table and one JSON line. The operator chooses: SCNS_NATS_SYNC=always for `up`;
a cluster with STREAM_REPLICAS=3 (compose.yaml)."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats  # noqa: E402
from nats.js.api import StorageType, StreamConfig  # noqa: E402

from shared.embedded import NatsCluster, NatsServer, free_port  # noqa: E402

PAYLOAD = b"x" * 400  # about the size of a JobSubmitted


def servers(mode: str, home: Path) -> list[NatsServer]:
    if mode != "cluster":
        return [NatsServer(home / "n0", free_port(), sync_always=mode == "sync-always")]
    ports = [free_port() for _ in range(3)]
    return [NatsServer(home / f"n{i}", free_port(),
                       cluster=NatsCluster("bench", f"n{i}", ports[i], tuple(p for p in ports if p != ports[i])))
            for i in range(3)]


async def measure(urls: list[str], replicas: int, count: int) -> dict:
    nc = await nats.connect(urls)
    js = nc.jetstream(publish_async_max_pending=2000)
    deadline = time.monotonic() + 30
    while True:  # a cluster takes a moment to elect its JetStream leader
        try:
            await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE,
                                             num_replicas=replicas))
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    started = time.monotonic()
    for _ in range(count):
        await js.publish("bench.one", PAYLOAD)
    one_by_one = count / (time.monotonic() - started)
    started = time.monotonic()
    for _ in range(count):
        await js.publish_async("bench.many", PAYLOAD)
    await js.publish_async_completed()
    pipelined = count / (time.monotonic() - started)
    await nc.close()
    return {"acked_one_by_one_per_s": round(one_by_one), "pipelined_per_s": round(pipelined)}


async def run(count: int) -> dict:
    results = {}
    for mode, replicas in (("default", 1), ("sync-always", 1), ("cluster", 3)):
        home = Path(tempfile.mkdtemp(prefix="scns-bench-durability-"))
        started = []
        try:
            for server in servers(mode, home):
                started.append(server.start())
            results[mode] = await measure([s.url for s in started], replicas, count)
        finally:
            for server in started:
                server.stop()
            shutil.rmtree(home, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    results = asyncio.run(run(args.events))
    print(f"\nJetStream durability modes, {args.events} publishes of {len(PAYLOAD)} bytes each")
    print(f"  {'mode':<34} {'acked one by one':>18} {'pipelined':>12}")
    labels = {"default": "one server, default sync", "sync-always": "one server, sync always",
              "cluster": "3 servers, R3 stream"}
    for mode, figures in results.items():
        print(f"  {labels[mode]:<34} {figures['acked_one_by_one_per_s']:>14} /s {figures['pipelined_per_s']:>10} /s")
    print(json.dumps({"bench": "durability", "events": args.events, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
