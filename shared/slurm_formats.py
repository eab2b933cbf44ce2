"""Slurm's textual formats, parsed and rendered (pure functions, shared by every service)."""

from __future__ import annotations

import re

UNLIMITED_WORDS = frozenset({"UNLIMITED", "INFINITE"})

_MEMORY = re.compile(r"^([0-9]+)([KMGT]?)$", re.IGNORECASE)
_MEMORY_FACTOR_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}

# D-H[:M[:S]] | H:M[:S] | M ; every part plain digits (no signs, no underscores).
_DAYS = re.compile(r"^([0-9]+)-([0-9]+)(?::([0-9]+))?(?::([0-9]+))?$")
_CLOCK = re.compile(r"^([0-9]+):([0-9]+)(?::([0-9]+))?$")
_MINUTES = re.compile(r"^([0-9]+)$")
MAX_TIME_LIMIT_S = 365 * 86400  # longer is "UNLIMITED"; beyond it numbers stop fitting anywhere


class FormatError(ValueError):
    """The text is not in the expected format; the message says what is."""


def parse_time_limit(text: str) -> int:
    """Seconds of a Slurm time limit; 0 means no limit."""
    seconds = _time_limit_seconds(text)
    if seconds > MAX_TIME_LIMIT_S:
        raise FormatError(f"time_limit {text!r} is longer than 365 days; use UNLIMITED for no limit")
    return seconds


def _time_limit_seconds(text: str) -> int:
    value = text.strip()
    if value.upper() in UNLIMITED_WORDS:
        return 0
    if match := _MINUTES.match(value):
        return int(match[1]) * 60
    if match := _CLOCK.match(value):
        hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
        _check_ranges(text, minutes=minutes, seconds=seconds)
        return hours * 3600 + minutes * 60 + seconds
    if match := _DAYS.match(value):
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        _check_ranges(text, hours=hours, minutes=minutes, seconds=seconds)
        return days * 86400 + hours * 3600 + minutes * 60 + seconds
    raise FormatError(
        f"time_limit {text!r} is not minutes, H:M, H:M:S, D-H, D-H:M, D-H:M:S, UNLIMITED or INFINITE"
    )


def _check_ranges(text: str, *, hours: int = 0, minutes: int = 0, seconds: int = 0) -> None:
    if hours > 23 or minutes > 59 or seconds > 59:
        raise FormatError(f"time_limit {text!r} has a part out of range (hours 0-23, minutes and seconds 0-59)")


def format_limit(seconds: int) -> str:
    """Slurm's display of a limit: M:SS, H:MM:SS, D-HH:MM:SS or UNLIMITED."""
    if seconds <= 0:
        return "UNLIMITED"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_elapsed(seconds: float) -> str:
    """D-HH:MM:SS, as the original's elapsed_time."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_memory_mb(text: str) -> int:
    """Megabytes of a Slurm memory size (no suffix = megabytes); at least 1 MB."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise FormatError(f"memory {text!r} is not a number with an optional K, M, G or T suffix")
    megabytes = int(match[1]) * _MEMORY_FACTOR_MB[match[2].upper()]
    if megabytes < 1:
        raise FormatError(f"memory {text!r} is less than 1M")
    return int(megabytes)

