"""How things look: Slurm's state codes and durations, tables, colour, times (pure)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from shared.slurm_formats import format_elapsed, format_limit

STATE_CODES = {"PENDING": "PD", "RUNNING": "R", "COMPLETED": "CD", "FAILED": "F", "CANCELLED": "CA",
               "TIMEOUT": "TO", "OUT_OF_MEMORY": "OOM", "NODE_FAIL": "NF"}
STATES = tuple(STATE_CODES)
ACTIVE_STATES = ("PENDING", "RUNNING")
TERMINAL_STATES = tuple(state for state in STATES if state not in ACTIVE_STATES)
STATE_BY_CODE = {code: state for state, code in STATE_CODES.items()}
_ALIASES = {"CANCELED": "CANCELLED", "OOM": "OUT_OF_MEMORY", "CG": "RUNNING"}

# ANSI SGR colours of the states: running green, waiting yellow, done blue, cancelled magenta, failures red.
_STATE_COLOURS = {"RUNNING": "32", "PENDING": "33", "COMPLETED": "34", "CANCELLED": "35", "FAILED": "31",
                  "TIMEOUT": "31", "OUT_OF_MEMORY": "31", "NODE_FAIL": "31"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_states(text: str | None) -> list[str] | None:
    """`-t`/`--state` values: long names or Slurm's codes, comma-separated, any case; "all" is every
    state. None when not given."""
    if not text:
        return None
    states: list[str] = []
    for word in (part.strip().upper() for part in text.split(",")):
        if not word:
            continue
        if word == "ALL":
            return list(STATES)
        state = _ALIASES.get(word) or STATE_BY_CODE.get(word) or (word if word in STATE_CODES else None)
        if state is None:
            raise ValueError(f"unknown job state {word!r} (known: {', '.join(STATES)} or "
                             f"{', '.join(STATE_CODES.values())})")
        if state not in states:
            states.append(state)
    return states


def split_list(values: Sequence[str] | None) -> list[str]:
    """Repeated and comma-separated option values as one list (`-j 1,2 -j 3`)."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


class Style:
    """Colour on a terminal, nothing otherwise: `Style(False)` returns text unchanged."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and code and text else text

    def bold(self, text: str) -> str:
        return self.paint(text, "1")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def state(self, text: str, state: str) -> str:
        return self.paint(text, _STATE_COLOURS.get(state, ""))


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # right-aligned (numbers)
    shrink: bool = False  # may be cut to fit the terminal's width


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], style: Style, *, header: bool = True,
          width: int | None = None, colours: Sequence[Callable[[str], str] | None] | None = None) -> str:
    """Aligned columns separated by two spaces (the last one not padded). `width` (a terminal's)
    cuts shrinkable columns with "…" so that lines fit; `colours[i]` paints column i's cells."""
    widths = [max([len(column.header) if header else 0, *(len(row[i]) for row in rows)])
              for i, column in enumerate(columns)]
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        for i, column in enumerate(columns):
            if excess <= 0:
                break
            if column.shrink:
                cut = min(excess, max(0, widths[i] - max(len(column.header), 6)))
                widths[i] -= cut
                excess -= cut

    def cell(i: int, text: str, paint: Callable[[str], str] | None) -> str:
        if len(text) > widths[i]:
            text = text[:max(0, widths[i] - 1)] + "…"
        padding = " " * (widths[i] - len(text))
        shown = paint(text) if paint else text
        if i == len(columns) - 1 and not columns[i].right:
            return shown
        return padding + shown if columns[i].right else shown + padding

    lines = []
    if header:
        lines.append("  ".join(cell(i, column.header, style.bold) for i, column in enumerate(columns)).rstrip())
    for row in rows:
        lines.append("  ".join(cell(i, text, (colours or [None] * len(columns))[i]) for i, text in enumerate(row))
                     .rstrip())
    return "\n".join(lines)


# ---- times ---------------------------------------------------------------------------------------

def parse_timestamp(text: str | None) -> datetime | None:
    """An API timestamp ("...Z") as an aware datetime."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def local_time(text: str | None) -> str:
    """A timestamp in the local time zone, as Slurm shows them (2025-11-07T10:20:30); "Unknown"
    when there is none."""
    moment = parse_timestamp(text)
    if moment is None:
        return "Unknown"
    return moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def used_time(seconds: float) -> str:
    """squeue's TIME: M:SS, H:MM:SS or D-HH:MM:SS; 0:00 before the start."""
    return format_limit(int(seconds)) if seconds >= 1 else "0:00"


def elapsed_time(seconds: float) -> str:
    """sacct's Elapsed: [D-]HH:MM:SS (the API's D-HH:MM:SS without a day count of 0)."""
    return format_elapsed(seconds).removeprefix("0-")


def max_rss(kilobytes: int | None) -> str:
    """sacct's MaxRSS: kibibytes with a K; empty when not known."""
    return "" if kilobytes is None else f"{kilobytes}K"


def total_cpu(seconds: float | None) -> str:
    """sacct's TotalCPU: MM:SS.mmm under an hour, else [D-]HH:MM:SS; empty when not known."""
    if seconds is None:
        return ""
    seconds = round(seconds, 3)  # (59.9996 s is 01:00.000, not 00:60.000)
    if seconds >= 3600:
        return elapsed_time(seconds)
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{rest:06.3f}"


def run_seconds(job: dict, now: datetime) -> float:
    """From its start to its end (or now); 0 before it started."""
    start = parse_timestamp(job.get("start_time"))
    if start is None:
        return 0.0
    end = parse_timestamp(job.get("end_time")) or now
    return max(0.0, (end - start).total_seconds())


def duration_seconds(text: str) -> int:
    """The API's D-HH:MM:SS (elapsed_time) in seconds; 0 when it is not that."""
    match = re.fullmatch(r"(\d+)-(\d+):(\d+):(\d+)", text or "")
    if not match:
        return 0
    days, hours, minutes, seconds = (int(part) for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


_RELATIVE = re.compile(r"^now(?:([+-])(\d+)(seconds?|minutes?|hours?|days?|weeks?|[smhdw])?)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """A time as sacct's -S/-E take it: YYYY-MM-DD[THH:MM[:SS]], HH:MM[:SS] (today), now,
    now[+-]N[seconds|minutes|hours|days|weeks] (default unit: seconds), today, midnight, or an ISO
    8601 time with a zone. Local time unless a zone is given; an aware datetime."""
    value = text.strip()
    lower = value.lower()
    local_now = now.astimezone()
    if lower in ("today", "midnight"):
        return local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    if match := _RELATIVE.match(lower):
        sign, amount, unit = match.groups()
        if not sign:
            return local_now
        delta = timedelta(seconds=int(amount) * _UNITS[(unit or "s")[0]])
        return local_now + delta if sign == "+" else local_now - delta
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", value):
        parts = [int(part) for part in value.split(":")] + [0]
        try:
            return local_now.replace(hour=parts[0], minute=parts[1], second=parts[2], microsecond=0)
        except ValueError:
            pass
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None:
            return moment.astimezone() if moment.tzinfo is None else moment
    raise ValueError(f"{text!r} is not a time (YYYY-MM-DD[THH:MM[:SS]], HH:MM[:SS], now[-N[units]], today)")


# ---- squeue --format -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    letter: str
    width: int | None
    right: bool


_SPEC = re.compile(r"%(\.)?(\d+)?([A-Za-z%])")


def parse_format(text: str, known: str) -> list[str | Field]:
    """squeue's `--format`: literal text and `%[.][width]X` fields ('.' right-aligns); `%%` is a %."""
    parts: list[str | Field] = []
    position = 0
    for match in _SPEC.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()])
        dot, width, letter = match.groups()
        if letter == "%":
            parts.append("%")
        elif letter not in known:
            raise ValueError(f"--format: %{letter} is not a field scns knows (known: "
                             f"{', '.join('%' + k for k in known)})")
        else:
            parts.append(Field(letter, int(width) if width else None, bool(dot)))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    for part in parts:
        if isinstance(part, str) and part != "%" and "%" in part:
            raise ValueError(f"--format: {part.strip()!r} is not a field (%[.][width]X)")
    if not any(isinstance(part, Field) for part in parts):
        raise ValueError(f"--format {text!r} has no field")
    return parts


def format_line(parts: Sequence[str | Field], value_of: Callable[[str], str]) -> str:
    """One line of a parsed --format: a field with a width is padded or cut to it (as squeue)."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        text = value_of(part.letter)
        if part.width is not None:
            text = text[:part.width]
            text = text.rjust(part.width) if part.right else text.ljust(part.width)
        out.append(text)
    return "".join(out).rstrip()
