"""Request/reply messages on core NATS (not events: nothing here is kept in the log)."""

from __future__ import annotations

import msgspec


class LogRequest(msgspec.Struct, kw_only=True):
    """Ask the executor that ran a job for its output files (`scnsctl.logs.<node>`)."""

    stdout: str
    stderr: str


class LogReply(msgspec.Struct, kw_only=True):
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
