"""Where First Fit finds room: per partition, a max tree over the nodes in registration order (pure).

Scanning the nodes from the first for every decision costs time linear in the nodes (quadratic
for a pass over an idle cluster). Each partition keeps instead a segment tree whose leaves are
its nodes' free CPUs, free memory and idleness (no job: what an exclusive job needs), and whose
inner entries are the maxima below them: the leftmost node with room is found by descending
into the leftmost subtree whose maxima suffice, in logarithmic time (a subtree whose maxima
suffice separately but on no single node is left after a look at it).

The index is derived from the nodes and never stored: the state keeps it in step as nodes
change, and builds it whole before the first pass of a fresh state or of one read from a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the state holds the index: a run-time import would be circular
    from services.scheduler.core.state import Node

NO_ROOM = (-1, -1, 0)  # a node that takes no job of the partition: down, drained, or not serving it


@dataclass(slots=True)
class Planned:
    """Capacity taken on a node by a pass's earlier decisions."""

    cpus: int = 0
    memory_mb: int = 0
    jobs: int = 0


NOTHING_PLANNED = Planned()


@dataclass(slots=True)
class _Tree:
    """Leaf i of the node at position i is entry `size + i`; entry k holds the maxima of 2k and 2k+1."""

    size: int
    cpus: list[int]
    memory_mb: list[int]
    idle: list[int]

    @classmethod
    def empty(cls, leaves: int) -> _Tree:
        size = 1
        while size < leaves:
            size *= 2
        return cls(size, [-1] * 2 * size, [-1] * 2 * size, [0] * 2 * size)

    def set(self, position: int, room: tuple[int, int, int]) -> None:
        entry = self.size + position
        self.cpus[entry], self.memory_mb[entry], self.idle[entry] = room
        entry //= 2
        while entry:
            left, right = 2 * entry, 2 * entry + 1
            self.cpus[entry] = max(self.cpus[left], self.cpus[right])
            self.memory_mb[entry] = max(self.memory_mb[left], self.memory_mb[right])
            self.idle[entry] = max(self.idle[left], self.idle[right])
            entry //= 2

    def leftmost(self, cpus: int, memory_mb: int, idle: bool) -> int | None:
        """The first position with at least that much room (and idle, if asked), or None."""
        wanted_idle = int(idle)
        pending = [1]
        while pending:
            entry = pending.pop()
            if self.cpus[entry] < cpus or self.memory_mb[entry] < memory_mb or self.idle[entry] < wanted_idle:
                continue
            if entry >= self.size:
                return entry - self.size
            pending += (2 * entry + 1, 2 * entry)  # the left subtree is looked at first
        return None


@dataclass(slots=True)
class FreeCapacity:
    built: bool = False  # False: to be built from the nodes before a pass (a fresh or decoded state)
    names: list[str] = field(default_factory=list)  # by position: registration order
    positions: dict[str, int] = field(default_factory=dict)
    trees: dict[str, _Tree] = field(default_factory=dict)  # partition -> its nodes' room

    def rebuild(self, nodes: Iterable[Node]) -> None:
        self.built, self.names, self.positions, self.trees = True, [], {}, {}
        for node in nodes:
            self.refresh(node)

    def refresh(self, node: Node, planned: Planned = NOTHING_PLANNED) -> None:
        """Put a node's room (less what this pass has planned on it) in every partition's tree."""
        if not self.built:
            return
        position = self.positions.get(node.name)
        if position is None:  # registered after the others
            position = self.positions[node.name] = len(self.names)
            self.names.append(node.name)
        for partition in node.partitions:
            if partition not in self.trees:
                self.trees[partition] = _Tree.empty(len(self.names))
        for partition, tree in self.trees.items():
            if position >= tree.size:
                tree = self.trees[partition] = self._grown(tree)
            tree.set(position, _room(node, partition, planned))

    def _grown(self, tree: _Tree) -> _Tree:
        grown = _Tree.empty(2 * tree.size)
        for position in range(tree.size):
            grown.set(position, (tree.cpus[tree.size + position], tree.memory_mb[tree.size + position],
                                 tree.idle[tree.size + position]))
        return grown

    def first_fit(self, partition: str, cpus: int, memory_mb: int, exclusive: bool) -> str | None:
        """The first node (registration order) of the partition with that room, or idle for an exclusive job."""
        tree = self.trees.get(partition)
        if tree is None:
            return None
        position = tree.leftmost(0, 0, True) if exclusive else tree.leftmost(cpus, memory_mb, False)
        return None if position is None else self.names[position]


def _room(node: Node, partition: str, planned: Planned) -> tuple[int, int, int]:
    if not node.alive or node.drained or partition not in node.partitions:
        return NO_ROOM
    return (node.free_cpus - planned.cpus, node.free_memory_mb - planned.memory_mb,
            int(not node.jobs and not planned.jobs))


@contextmanager
def planning(capacity: FreeCapacity, nodes: dict[str, Node]) -> Iterator[dict[str, Planned]]:
    """A pass's plan (node -> what it takes there so far), shown in the index while the pass runs
    (`refresh(node, planned)`) and taken out of it afterwards: the pass leaves the state as it found it."""
    plan: dict[str, Planned] = {}
    try:
        yield plan
    finally:
        for name in plan:
            capacity.refresh(nodes[name])
