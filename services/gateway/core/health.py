"""Whether the read model keeps up with the log (pure: the caller gives the time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ProjectionWatch:
    """Remembers when the projection last moved, to tell a busy projector from a stalled one."""

    stall_after_s: float
    max_lag: int
    position: int = -1
    moved_at: float = 0.0

    def check(self, last_seq: int, position: int, now: float) -> tuple[bool, str]:
        if position != self.position:
            self.position, self.moved_at = position, now
        lag = max(0, last_seq - position)
        if lag and now - self.moved_at > self.stall_after_s:
            return False, f"stalled: {lag} events behind, no progress for {now - self.moved_at:.0f} s"
        if lag > self.max_lag:
            return False, f"lagging: {lag} events behind the log"
        return True, f"ok: {lag} events behind"
