"""What the API shows of a job's output file (pure)."""

from __future__ import annotations

TAIL_THRESHOLD_BYTES = 1024 * 1024
TAIL_LINES = 1000
TAIL_MARKER = "...（仅展示最后 1000 行）...\n"


def render_log(size: int, tail: bytes) -> str:
    """`tail` is the whole file when `size` is at most 1 MiB, else its last 1 MiB.

    Larger files show their last 1000 lines (at most 1 MiB) after the original's marker.
    Invalid UTF-8 is replaced, not dropped.
    """
    if size <= TAIL_THRESHOLD_BYTES:
        return tail.decode("utf-8", errors="replace")
    lines = tail.split(b"\n")
    if len(tail) == TAIL_THRESHOLD_BYTES and size > len(tail):
        lines = lines[1:]  # the first line was cut by the 1 MiB window
    kept = lines[-(TAIL_LINES + 1):] if lines and lines[-1] == b"" else lines[-TAIL_LINES:]
    return TAIL_MARKER + b"\n".join(kept).decode("utf-8", errors="replace")
