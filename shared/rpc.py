"""Request/reply messages on core NATS (not events: nothing here is kept in the log)."""

from __future__ import annotations

import msgspec


class LogRequest(msgspec.Struct, kw_only=True):
    """Ask the executor that ran a job for its output files (`scnsctl.logs.<node>`).

    The executor reads the files the job's submission names, as the user the job ran as; it
    answers an error to a request without `job_id`. No path is sent: an executor from before
    this rule read the paths a request named, so no request may name one."""

    job_id: int | None = None


class LogReply(msgspec.Struct, kw_only=True):
    stdout: str = ""
    stderr: str = ""
    error: str | None = None


REBUILD_SUBJECT = "scnsctl.projector.rebuild"


class RebuildReport(msgspec.Struct, kw_only=True):
    """What a rebuild of the read model did (`error` set when it failed)."""

    events: int = 0
    seconds: float = 0.0
    events_per_second: float = 0.0
    position: int = 0
    checksum: str = ""
    equal_to_live: bool | None = None  # None: there was no live model to compare with
    error: str | None = None
