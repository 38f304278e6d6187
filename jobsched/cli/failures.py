"""How a client command ends other than with success (CLI.md, "Exit codes")."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STILL_RUNNING = 3
EXIT_TIMED_OUT = 124
EXIT_CANCELLED = 125
EXIT_INTERRUPTED = 130


class CliFailure(Exception):
    """Printed as one line `Error: <message>` (and `Hint: <hint>` when given) on stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class UsageFailure(CliFailure):
    """A bad option value found after parsing (an address, a TLS file option)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_USAGE)


class CliExit(Exception):
    """End with `exit_code`; whatever needed saying was printed already."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code
