"""A scheduler's state as bytes, so a restart replays only the log after it (pure).

The snapshot carries its log position (`state.last_seq`); replaying from the next sequence
gives the same state as replaying from the start, since every fold case is idempotent (decisions
assumed before they were read back are in the snapshot and applied again without effect).
"""

from __future__ import annotations

from dataclasses import replace

import msgspec

from services.scheduler.core.capacity import FreeCapacity
from services.scheduler.core.state import SchedulerState

# Bump whenever SchedulerState changes shape: older snapshots are then ignored (a full replay).
SNAPSHOT_FORMAT = 3


class Snapshot(msgspec.Struct, frozen=True):
    format: int
    log_id: str  # which log the state was folded from: a recreated stream has another
    state: SchedulerState


def encode_snapshot(state: SchedulerState, log_id: str) -> bytes:
    # The index of free capacity is derived from the nodes: a restored state builds it again.
    return msgspec.msgpack.encode(Snapshot(SNAPSHOT_FORMAT, log_id, replace(state, capacity=FreeCapacity())))


def decode_snapshot(data: bytes, log_id: str) -> SchedulerState | None:
    """The state in a snapshot of this log, or None: another format, another log, or not a snapshot."""
    try:
        snapshot = msgspec.msgpack.decode(data, type=Snapshot)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return snapshot.state if (snapshot.format, snapshot.log_id) == (SNAPSHOT_FORMAT, log_id) else None
