"""Turning what one job attempt produced into a `JobResult` (shared by the executors).

The rules of BEHAVIOUR.md §5 live here once: exit 0 completes, anything else fails;
each stream is capped at a byte limit (the rest dropped, `output_truncated` set);
invalid UTF-8 is replaced; a job killed for a timeout or a cancel has no exit code.
"""

from __future__ import annotations

import time

from jobsched.jobs.model import JobResult, JobStatus

# The error of an attempt killed by cancel() (the worker discards it) or by stop().
CANCELLED = "Cancelled"
STOPPED = "Executor stopped"
# The error of an attempt not started: the lease ran out while it was being started
# (the node was paused), so the leader may have taken the job back (the worker fences
# itself and discards it).
LEASE_RAN_OUT = "Not started: this node lost contact with the leader"


def now_ms() -> int:
    """Wall-clock milliseconds: executors report real times, they are not replicated state."""
    return int(time.time() * 1000)


def timed_out_message(timeout_seconds: int) -> str:
    return f"Timed out after {timeout_seconds}s"


class CappedBuffer:
    """Keeps the first `limit` bytes written to it and remembers whether more came."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        room = self._limit - len(self._data)
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        self._data += data

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")


def exited(
    exit_code: int, stdout: CappedBuffer, stderr: CappedBuffer, started_at_ms: int | None
) -> JobResult:
    """The result of a command that ran to its end with `exit_code`."""
    return JobResult(
        status=JobStatus.COMPLETED if exit_code == 0 else JobStatus.FAILED,
        exit_code=exit_code,
        output=stdout.text(),
        error=stderr.text(),
        output_truncated=stdout.truncated or stderr.truncated,
        started_at_ms=started_at_ms,
        completed_at_ms=now_ms(),
    )


def killed(
    error: str,
    stdout: CappedBuffer | None,
    started_at_ms: int | None,
    timed_out: bool = False,
) -> JobResult:
    """A failed attempt without an exit code (timeout, cancel, missing image...).

    `error` replaces stderr; the stdout gathered so far, if any, is kept; `timed_out`
    says the attempt was killed at its timeout.
    """
    return JobResult(
        status=JobStatus.FAILED,
        exit_code=None,
        output=stdout.text() if stdout is not None else "",
        error=error,
        output_truncated=stdout.truncated if stdout is not None else False,
        started_at_ms=started_at_ms,
        completed_at_ms=now_ms(),
        timed_out=timed_out,
    )
