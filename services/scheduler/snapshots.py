"""Scheduler snapshots in a JetStream object store, shared by every scheduler of the cluster."""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import NotFoundError

from services.scheduler.core.snapshot import decode_snapshot, encode_snapshot
from services.scheduler.core.state import SchedulerState
from shared.bus import JetStreamEventLog
from shared.events import SNAPSHOTS_BUCKET, STREAM

log = logging.getLogger(__name__)

OBJECT = "scheduler"
READ_TIMEOUT_S = 60.0


class SnapshotStore:
    def __init__(self, events: JetStreamEventLog, replicas: int = 1) -> None:
        self.events = events
        self.replicas = replicas
        self._store = None
        self._log_id = ""

    async def log_id(self) -> str:
        """The stream's creation time: a stream deleted and created again is another log."""
        if not self._log_id:
            self._log_id = str((await self.events.js.stream_info(STREAM)).created)
        return self._log_id

    async def load(self) -> SchedulerState | None:
        """The last snapshot, if there is a usable one: of this format, of this log, not ahead of it.
        Whatever goes wrong reading it means a full replay, never a failed start."""
        try:
            store = await self.events.js.object_store(SNAPSHOTS_BUCKET)
            data = (await asyncio.wait_for(store.get(OBJECT), READ_TIMEOUT_S)).data or b""
            state = decode_snapshot(data, await self.log_id())
            last_seq = await self.events.last_seq()
        except NotFoundError:
            return None
        except (nats.errors.Error, asyncio.TimeoutError) as error:
            log.warning("no scheduler snapshot read (%s): replaying the whole log", type(error).__name__)
            return None
        if state is None or state.last_seq > last_seq:
            log.warning("ignoring a scheduler snapshot of another format or log: replaying the whole log")
            return None
        return state

    async def save(self, state: SchedulerState) -> bool:
        """Store a snapshot of the state as it is now; False (logged) when NATS could not take it."""
        try:
            data = encode_snapshot(state, await self.log_id())
            if self._store is None:
                self._store = await self.events.js.create_object_store(
                    SNAPSHOTS_BUCKET, ObjectStoreConfig(storage=StorageType.FILE, replicas=self.replicas))
            await self._store.put(OBJECT, data)
        except (nats.errors.Error, asyncio.TimeoutError) as error:  # the bucket deleted, NATS away, ...
            log.warning("scheduler snapshot at seq %d not stored (%s)", state.last_seq, type(error).__name__)
            self._store = None
            return False
        return True
