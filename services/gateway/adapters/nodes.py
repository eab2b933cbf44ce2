"""The gateway's directory of nodes, folded from node events in the log (no database trip)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone

from services.gateway.core.validation import PartitionCapacity
from shared.bus import JetStreamEventLog, decode_message
from shared.events import HEARTBEAT_SUBJECT, NodeDown, NodeDrained, NodeRegistered, NodeResumed


@dataclass(slots=True)
class KnownNode:
    registration: NodeRegistered
    alive: bool = True
    drained: bool = False


class NodeDirectory:
    def __init__(self) -> None:
        self.nodes: dict[str, KnownNode] = {}
        self.heartbeats: dict[str, datetime] = {}  # last seen by this gateway
        self.ready = asyncio.Event()

    def apply(self, event) -> None:
        match event:
            case NodeRegistered(node=name):
                drained = self.nodes[name].drained if name in self.nodes else False
                self.nodes[name] = KnownNode(event, drained=drained)
            case NodeDown(node=name) if name in self.nodes:
                self.nodes[name].alive = False
            case NodeDrained(node=name) | NodeResumed(node=name) if name in self.nodes:
                self.nodes[name].drained = isinstance(event, NodeDrained)

    def partitions(self) -> dict[str, PartitionCapacity]:
        capacity: dict[str, PartitionCapacity] = {}
        for known in self.nodes.values():
            node = known.registration
            for partition in node.partitions:
                largest = capacity.get(partition, PartitionCapacity(0, 0))
                capacity[partition] = PartitionCapacity(
                    max(largest.max_cpus, node.cpus), max(largest.max_memory_mb, node.memory_mb)
                )
        return capacity

    def partition_live(self, partition: str) -> bool:
        return any(k.alive and not k.drained and partition in k.registration.partitions for k in self.nodes.values())

    async def follow(self, events: JetStreamEventLog) -> None:
        async def on_heartbeat(msg) -> None:
            self.heartbeats[msg.subject.rsplit(".", 1)[-1]] = datetime.now(timezone.utc)

        await events.nc.subscribe(HEARTBEAT_SUBJECT.format(node="*"), cb=on_heartbeat)
        subject = "scns.node.>"
        if await events.last_on(subject) is None:
            self.ready.set()
        async for msg in events.replay(1, subject):
            if delivered := decode_message(msg):
                self.apply(delivered.event)
            if msg.metadata.num_pending == 0:
                self.ready.set()
