#!/usr/bin/env python3
"""Example integration: write a line whenever a job of one account ends.

It needs nothing of SCNS-Conductor but nats-py: its own durable consumer on the event stream,
filtered to the jobs' ends, started from any stream sequence or time, acknowledging each event
explicitly once its line is written (and synced). One event is in flight at a time, so events
arrive in stream order even after a crash; each line starts with the event's stream sequence,
and on start it skips what the file already has, so a crash between writing and acknowledging
repeats nothing, and a stop (or a NATS restart) loses nothing: the consumer keeps the position.

    python examples/notify_on_finish.py --account project_alpha --output finished.txt [--from-seq 1 | --since 2026-11-28T00:00:00Z]

With the embedded stack, NATS wants credentials: the read-only ones made for integrations,
`--credentials .scns/nats-credentials/integration.json` (or NATS_CREDENTIALS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import datetime
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

STREAM = "SCNS"
ENDS = "scns.job.*.end.>"  # see docs/events.md
STATE_OF = {"JobCancelled": "CANCELLED", "JobLost": "NODE_FAIL"}  # JobFinished carries its own


def line_for(seq: int, event: dict, job_account: str, account: str) -> str | None:
    """The line for an end event, or None (a requeue is not an end; another account's job)."""
    if event["type"] == "JobRequeued" or job_account != account:
        return None
    state = STATE_OF.get(event["type"], event.get("state"))
    return f"{seq} job {event['job_id']} {state} {event.get('exit_code', '0:0')}"


def login(credentials: Path | None) -> dict:
    """nats.connect's arguments for a credentials file ({"user": ..., "password": ...}); the user may
    subscribe only to its own inbox prefix, _INBOX_<user>."""
    if credentials is None:
        return {}
    entry = json.loads(credentials.read_text())
    return {"user": entry["user"], "password": entry["password"], "inbox_prefix": f"_INBOX_{entry['user']}"}


def last_written(output: Path) -> int:
    if not output.exists():
        return 0
    # A last line torn by a crash has no newline yet: it does not count (it will be written again).
    lines = output.read_text().split("\n")[:-1]
    return max((int(line.split()[0]) for line in lines if line), default=0)


async def ensure_consumer(js, durable: str, from_seq: int | None, since: datetime | None) -> None:
    """Create the durable consumer unless it exists: an existing one keeps its position."""
    try:
        await js.consumer_info(STREAM, durable)
        return
    except NotFoundError:
        pass
    if since is not None:
        start = {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": since.isoformat()}
    elif from_seq is not None:
        start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": from_seq}
    else:
        start = {"deliver_policy": DeliverPolicy.NEW}
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=durable, filter_subject=ENDS,
                                                 # one unacknowledged at a time: redeliveries keep the order
                                                 ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1, **start))


async def follow(nats_url: str, account: str, output: Path, durable: str, from_seq: int | None = None,
                 since: datetime | None = None, stop: asyncio.Event | None = None,
                 credentials: Path | None = None) -> None:
    stop = stop or asyncio.Event()
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, **login(credentials))
    try:
        js = nc.jetstream()
        await ensure_consumer(js, durable, from_seq, since)
        sub = await js.pull_subscribe_bind(durable=durable, stream=STREAM)
        written = last_written(output)
        accounts: dict[int, str] = {}
        while not stop.is_set():
            try:
                for msg in await sub.fetch(1, timeout=1):
                    seq, event = msg.metadata.sequence.stream, json.loads(msg.data)
                    if seq > written:
                        job_id = event["job_id"]
                        if job_id not in accounts:  # the job's submission is the message at its id
                            submitted = await js.get_msg(STREAM, seq=job_id)
                            accounts[job_id] = json.loads(submitted.data)["spec"]["account"]
                        if line := line_for(seq, event, accounts[job_id], account):
                            with output.open("a") as file:
                                file.write(line + "\n")
                                file.flush()
                                os.fsync(file.fileno())
                        written = seq
                    await msg.ack()
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except nats.errors.Error:  # NATS restarting: the unacknowledged event comes again
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats", default="nats://127.0.0.1:14222")
    parser.add_argument("--account", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--durable", default=None, help="consumer name (default: notify-<account>)")
    parser.add_argument("--credentials", type=Path, default=os.environ.get("NATS_CREDENTIALS") or None,
                        help="NATS user and password file (the integration's)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-seq", type=int, help="on first start: from this stream sequence")
    start.add_argument("--since", type=datetime.fromisoformat, help="on first start: from this time")
    args = parser.parse_args()
    try:
        asyncio.run(follow(args.nats, args.account, args.output, args.durable or f"notify-{args.account}",
                           args.from_seq, args.since, credentials=args.credentials))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
