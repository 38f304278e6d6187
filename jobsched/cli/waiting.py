"""Waiting for a job to become final (`job submit --wait`, `job wait`).

GetJobStatus is polled with a short backoff (0.1 s growing to 1 s). StreamJobOutput
would wake sooner, but the waiter needs the whole status in the end (the JSON object,
the attempt history that tells a timeout), which its final chunk does not carry, and
it would carry all the output only to drop it. On a terminal a spinner with the
elapsed time runs on stderr; piped, nothing is shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import views
from jobsched.cli.connection import Connection
from jobsched.cli.failures import EXIT_INTERRUPTED, EXIT_STILL_RUNNING, CliExit
from jobsched.cli.outcome import FINAL_STATUSES
from jobsched.cli.output import Printer

FIRST_POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 1.0
BACKOFF = 1.5


class _Progress:
    """The spinner's text, re-rendered on every refresh so the elapsed time runs."""

    def __init__(self, job_id: str, started: float, clock: Callable[[], float]) -> None:
        self._job_id = job_id
        self._started = started
        self._clock = clock
        self.status = "PENDING"

    def __rich__(self) -> Text:
        elapsed = int(self._clock() - self._started)
        return Text(f"Waiting for job {self._job_id} ({self.status}, {elapsed}s)")


class _NoSpinner:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None


def _spinner(console: Console, progress: _Progress):
    if console.is_terminal:
        return console.status(progress, spinner="dots")
    return _NoSpinner()


def wait_until_final(
    connection: Connection,
    job_id: str,
    printer: Printer,
    resume_hint: str,
    cancel_hint: str,
    max_wait: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> pb.GetJobStatusResponse:
    """The job's status once final. When `max_wait` seconds run out, or on Ctrl-C, the
    job goes on: say how to resume (`resume_hint`) or cancel (`cancel_hint`), and end
    with exit 3 or 130."""
    started = clock()
    progress = _Progress(job_id, started, clock)
    interval = FIRST_POLL_INTERVAL
    request = pb.GetJobStatusRequest(job_id=job_id)
    try:
        with _spinner(printer.err, progress):
            while True:
                job = connection.call("GetJobStatus", request)
                if job.status in FINAL_STATUSES:
                    return job
                progress.status = views.status_name(job.status)
                remaining = None if max_wait is None else started + max_wait - clock()
                if remaining is not None and remaining <= 0:
                    break
                sleep(interval if remaining is None else min(interval, remaining))
                interval = min(interval * BACKOFF, MAX_POLL_INTERVAL)
    except KeyboardInterrupt:
        printer.notice(f"Stopped waiting; job {job_id} goes on. Cancel it with: {cancel_hint}")
        raise CliExit(EXIT_INTERRUPTED) from None
    if printer.json_mode:
        printer.json(views.job_status(job))
    printer.notice(
        f"Job {job_id} is still {views.status_name(job.status)} after {max_wait:g}s; "
        f"it goes on. Wait again with: {resume_hint}"
    )
    raise CliExit(EXIT_STILL_RUNNING)
