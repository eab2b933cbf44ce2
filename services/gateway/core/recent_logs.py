"""The output of ended jobs, kept a few seconds by the gateway. Nothing of an ended job writes its
files any more (its processes are gone before its end is reported), so the clients that poll a job
until it ends, then read it again and again, need not each ask its node: the executor answers from
the compute node, where every read takes CPU from the jobs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_AGE_S = 5.0  # how stale a kept output may be (a file changed after its job ended, by hand)
MAX_CHARACTERS = 64 * 1024 * 1024  # all kept outputs together; the oldest go first


class RecentLogs:
    """Outputs in the order they were read from their nodes: the expired ones go as new ones come
    (so what is kept is at most `max_age_s` of reads, however small each is), and the oldest go
    first when the size is reached."""

    def __init__(self, clock: Callable[[], float], max_age_s: float = MAX_AGE_S,
                 max_characters: int = MAX_CHARACTERS) -> None:
        self.max_age_s = max_age_s
        self.max_characters = max_characters
        self.clock = clock
        self.characters = 0
        self._kept: OrderedDict[int, tuple[float, str, str]] = OrderedDict()

    def get(self, job_id: int) -> tuple[str, str] | None:
        """(stdout, stderr) of the job, read from its node at most `max_age_s` ago, or None."""
        if (kept := self._kept.get(job_id)) is None:
            return None
        read_at, stdout, stderr = kept
        if self._expired(read_at):
            self._drop(job_id)
            return None
        return stdout, stderr

    def put(self, job_id: int, stdout: str, stderr: str) -> None:
        self._drop(job_id)
        while self._kept and self._expired(next(iter(self._kept.values()))[0]):
            self._drop_oldest()
        size = len(stdout) + len(stderr)
        if size > self.max_characters:
            return  # larger than the whole room: read afresh every time
        while self.characters + size > self.max_characters:
            self._drop_oldest()
        self._kept[job_id] = (self.clock(), stdout, stderr)
        self.characters += size

    def _expired(self, read_at: float) -> bool:
        return self.clock() - read_at > self.max_age_s

    def _drop_oldest(self) -> None:
        self._drop(next(iter(self._kept)))

    def _drop(self, job_id: int) -> None:
        if (kept := self._kept.pop(job_id, None)) is not None:
            self.characters -= len(kept[1]) + len(kept[2])
