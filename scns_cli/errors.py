"""What the command line reports: one line on stderr and an exit status, never a traceback."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure the user can act on; its message is the whole line shown."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(CliError):
    """No answer from the server (refused, unknown host, timed out); `refused`: nothing listens
    there, so the request cannot have reached it (a retry is pointless, not dangerous)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class ApiError(CliError):
    """The server answered with an error status; `detail` is its explanation."""

    def __init__(self, status: int, detail: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.detail = detail
