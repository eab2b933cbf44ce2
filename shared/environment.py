"""What a job's environment variable may be named: what a POSIX shell can export. The gateway
refuses other names at submission; the executor fails a job that has one all the same."""

from __future__ import annotations

import re

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_ENTRIES = 256  # API.md: job.environment, at most this many variables
MAX_ENV_BYTES = 128 * 1024  # and this many bytes of names and values in all
